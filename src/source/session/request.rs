//! The binlog dump request: from a file position, or (MySQL) with the executed GTID set.

use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use super::Resume;
use crate::checkpoint::Checkpoint;
use crate::error::SourceError;
use crate::position::{BINLOG_START_OFFSET, BinlogPosition};
use crate::source::Endpoint;

/// Sends the dump request; a server that takes no notice of it fails after `io_timeout`.
pub async fn request_stream(
    endpoint: &Endpoint,
    conn: Conn,
    request: &DumpRequest,
) -> Result<BinlogStream, SourceError> {
    match tokio::time::timeout(
        endpoint.io_timeout,
        conn.get_binlog_stream(request.stream_request()),
    )
    .await
    {
        Err(_) => Err(SourceError::Timeout {
            what: "binlog dump request",
            address: endpoint.address(),
            timeout_ms: endpoint.io_timeout.as_millis() as u64,
        }),
        Ok(Err(e)) if crate::error::is_access_denied(&e) => {
            Err(SourceError::AccessDenied { source: e })
        }
        Ok(Err(e)) => Err(SourceError::Stream { source: e }),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// What the dump request asks for: a file position, or (MySQL) the executed GTID set, in
/// which case the server sends every transaction not in it (COM_BINLOG_DUMP_GTID).
#[derive(Debug, Clone)]
pub struct DumpRequest {
    server_id: u32,
    file: Vec<u8>,
    pos: u64,
    /// MySQL's executed set, one SID block entry per source UUID (and tag).
    gtid_set: Option<Vec<mysql_async::Sid<'static>>>,
}

impl DumpRequest {
    pub fn new(server_id: u32, start: &Checkpoint, resume: &Resume) -> Result<Self, SourceError> {
        Ok(match resume {
            Resume::Position { mark } => {
                // From the event the checkpoint was taken after, to see it again.
                let from = mark.as_ref().map_or(&start.position, |m| &m.position);
                Self::at(server_id, from)
            }
            // An empty file name makes MariaDB start from @slave_connect_state.
            Resume::MariadbGtid(_) => Self {
                server_id,
                file: Vec::new(),
                pos: BINLOG_START_OFFSET,
                gtid_set: None,
            },
            Resume::MysqlGtid(set) => Self {
                server_id,
                file: Vec::new(),
                pos: BINLOG_START_OFFSET,
                gtid_set: Some(
                    set.entries()
                        .iter()
                        .map(|e| e.parse::<mysql_async::Sid<'static>>())
                        .collect::<Result<_, _>>()
                        .map_err(|source| SourceError::InvalidGtidSet {
                            set: set.to_string(),
                            source,
                        })?,
                ),
            },
        })
    }

    pub fn at(server_id: u32, position: &BinlogPosition) -> Self {
        Self {
            server_id,
            file: position.file.as_bytes().to_vec(),
            pos: position.pos,
            gtid_set: None,
        }
    }

    fn stream_request(&self) -> BinlogStreamRequest<'_> {
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(&self.file)
            .with_pos(self.pos);
        match &self.gtid_set {
            Some(sids) => request.with_gtid().with_gtid_set(sids.iter().cloned()),
            None => request,
        }
    }

    /// The command packet mysql_async sends for this request (mysql_common builds it from
    /// the same fields).
    #[cfg(test)]
    fn packet(&self) -> Vec<u8> {
        use mysql_common::packets::binlog_request::BinlogRequest;
        use mysql_common::proto::MySerialize;
        let mut request = BinlogRequest::new(self.server_id)
            .with_filename(self.file.as_slice())
            .with_pos(self.pos);
        if let Some(sids) = &self.gtid_set {
            request = request.with_use_gtid(true).with_sids(sids.iter().cloned());
        }
        let mut buf = Vec::new();
        request.as_cmd().serialize(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{EventMark, MysqlGtidSet};
    use crate::source::flavor::Flavor;

    fn le64(n: u64) -> [u8; 8] {
        n.to_le_bytes()
    }

    #[test]
    fn a_mysql_gtid_resume_sends_com_binlog_dump_gtid_with_the_executed_set() {
        let set: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,\
                                 4e11fa47-71ca-11e1-9e33-c80aa9429562:10"
            .parse()
            .unwrap();
        let start = Checkpoint {
            gtid_set: Some(set.clone()),
            ..Checkpoint::new(BinlogPosition::new("binlog.000003", 1234), None)
        };
        let flavor = Flavor::from_version("8.4.3");
        let resume = Resume::of(&start, flavor, true);
        assert_eq!(resume, Resume::MysqlGtid(set));
        let packet = DumpRequest::new(4201, &start, &resume).unwrap().packet();

        // COM_BINLOG_DUMP_GTID as MySQL documents it: command 0x1e, flags u16
        // (BINLOG_THROUGH_GTID = 4: the SID block follows), server id u32, binlog name length
        // u32 + name, position u64, SID block size u32, then the SID block:
        // number of SIDs u64, per SID 16 UUID bytes, number of intervals u64, intervals as
        // [start, end) u64 pairs.
        let mut sid_block = Vec::new();
        sid_block.extend_from_slice(&le64(2));
        sid_block.extend_from_slice(&[
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        sid_block.extend_from_slice(&le64(2));
        for (from, to) in [(1, 6), (7, 8)] {
            sid_block.extend_from_slice(&le64(from));
            sid_block.extend_from_slice(&le64(to));
        }
        sid_block.extend_from_slice(&[
            0x4e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        sid_block.extend_from_slice(&le64(1));
        sid_block.extend_from_slice(&le64(10));
        sid_block.extend_from_slice(&le64(11));
        let mut expected = vec![0x1e];
        expected.extend_from_slice(&4u16.to_le_bytes());
        expected.extend_from_slice(&4201u32.to_le_bytes());
        expected.extend_from_slice(&0u32.to_le_bytes());
        expected.extend_from_slice(&le64(4));
        expected.extend_from_slice(&(sid_block.len() as u32).to_le_bytes());
        expected.extend_from_slice(&sid_block);
        assert_eq!(packet, expected);
    }

    #[test]
    fn a_position_resume_asks_for_the_event_the_checkpoint_was_taken_after() {
        let mark = EventMark {
            position: BinlogPosition::new("mariadb-bin.000002", 900),
            checksum: 7,
        };
        let start = Checkpoint {
            last_event: Some(mark.clone()),
            ..Checkpoint::new(
                BinlogPosition::new("mariadb-bin.000002", 931),
                Some("0-1-9".parse().unwrap()),
            )
        };
        let maria = Flavor::from_version("10.11.6-MariaDB");
        let resume = Resume::of(&start, maria, true);
        assert_eq!(resume, Resume::Position { mark: Some(mark) });
        let packet = DumpRequest::new(4201, &start, &resume).unwrap().packet();
        // COM_BINLOG_DUMP: command 0x12, position u32, flags u16, server id u32, file name.
        let mut expected = vec![0x12];
        expected.extend_from_slice(&900u32.to_le_bytes());
        expected.extend_from_slice(&0u16.to_le_bytes());
        expected.extend_from_slice(&4201u32.to_le_bytes());
        expected.extend_from_slice(b"mariadb-bin.000002");
        assert_eq!(packet, expected);
        // Another server (a failover): by GTID.
        assert_eq!(
            Resume::of(&start, maria, false),
            Resume::MariadbGtid("0-1-9".parse().unwrap())
        );
        // Nothing read yet: by GTID when there is one, else by the position itself.
        let fresh = Checkpoint::new(BinlogPosition::new("mariadb-bin.000002", 4), None);
        assert_eq!(
            Resume::of(&fresh, maria, true),
            Resume::Position { mark: None }
        );
    }
}
