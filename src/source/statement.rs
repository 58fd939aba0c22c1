//! What a query event's statement means to the source: transaction boundaries, savepoints,
//! XA, and inserts logged as statements (whose rows are not in the binlog).

use crate::position::Xid;

/// What a query event's statement means to the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT name` (binlogged inside a transaction).
    Savepoint(String),
    /// `ROLLBACK TO [SAVEPOINT] name`: rows after the savepoint are undone (the server
    /// binlogs them, and this, when the transaction also changed a non-transactional table).
    RollbackToSavepoint(String),
    XaStart(Xid),
    XaEnd,
    XaCommit(Xid),
    XaRollback(Xid),
    /// A statement that inserts rows (INSERT, REPLACE, LOAD DATA) logged as a statement:
    /// its rows are not in the binlog.
    Insert,
    /// Anything else: DDL, statement-format UPDATE/DELETE, session settings.
    Other,
}

impl Statement {
    /// Classifies a query event's statement text.
    pub fn of(sql: &[u8]) -> Self {
        let text = String::from_utf8_lossy(strip_leading_comments(sql));
        let text = text.trim_end_matches([';', ' ', '\n', '\r', '\t']);
        let mut words = text.split_ascii_whitespace();
        let first = words.next().unwrap_or_default().to_ascii_uppercase();
        let rest_after = |n: usize| -> &str {
            let mut rest = text.trim_start();
            for _ in 0..n {
                rest = rest
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .map_or("", |(_, r)| r);
            }
            rest.trim()
        };
        match first.as_str() {
            "BEGIN" if words.next().is_none() => Statement::Begin,
            "COMMIT" if words.next().is_none() => Statement::Commit,
            "ROLLBACK" => match words.next().map(str::to_ascii_uppercase).as_deref() {
                None => Statement::Rollback,
                Some("TO") => {
                    let name = words
                        .next()
                        .filter(|w| !w.eq_ignore_ascii_case("SAVEPOINT"))
                        .or_else(|| words.next())
                        .unwrap_or_default();
                    Statement::RollbackToSavepoint(unquote(name))
                }
                Some(_) => Statement::Other,
            },
            "SAVEPOINT" => Statement::Savepoint(unquote(words.next().unwrap_or_default())),
            "XA" => {
                let verb = words.next().unwrap_or_default().to_ascii_uppercase();
                let xid = Xid::from_statement(rest_after(2));
                match (verb.as_str(), xid) {
                    ("START" | "BEGIN", Some(xid)) => Statement::XaStart(xid),
                    ("END", _) => Statement::XaEnd,
                    ("COMMIT", Some(xid)) => Statement::XaCommit(xid),
                    ("ROLLBACK", Some(xid)) => Statement::XaRollback(xid),
                    _ => Statement::Other,
                }
            }
            "INSERT" | "REPLACE" | "LOAD" => Statement::Insert,
            _ => Statement::Other,
        }
    }
}

fn unquote(name: &str) -> String {
    name.trim_matches(['`', '"', '\'']).to_owned()
}

/// The statement without leading whitespace and `/* … */` comments.
fn strip_leading_comments(mut sql: &[u8]) -> &[u8] {
    loop {
        sql = sql.trim_ascii_start();
        match sql.strip_prefix(b"/*") {
            Some(rest) => match rest.windows(2).position(|w| w == b"*/") {
                Some(end) => sql = &rest[end + 2..],
                None => return &[],
            },
            None => return sql,
        }
    }
}

/// Whether a statement run with `default_schema` names table `schema.table`: qualified
/// (quoted or not), or unqualified with `schema` as the default database.
pub fn names_table(sql: &[u8], default_schema: &str, schema: &str, table: &str) -> bool {
    let text = String::from_utf8_lossy(sql)
        .replace('`', "")
        .to_ascii_lowercase();
    let (schema, table) = (schema.to_ascii_lowercase(), table.to_ascii_lowercase());
    let is_word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let occurs = |needle: &str, allow_dot_before: bool| {
        text.match_indices(needle).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + needle.len()..].chars().next();
            !before.is_some_and(|c| is_word_char(c) || (c == '.' && !allow_dot_before))
                && !after.is_some_and(is_word_char)
        })
    };
    occurs(&format!("{schema}.{table}"), false)
        || (default_schema.eq_ignore_ascii_case(&schema) && occurs(&table, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_as_the_servers_binlog_them() {
        assert_eq!(Statement::of(b"BEGIN"), Statement::Begin);
        assert_eq!(Statement::of(b"COMMIT"), Statement::Commit);
        assert_eq!(Statement::of(b"ROLLBACK"), Statement::Rollback);
        assert_eq!(
            Statement::of(b"ROLLBACK TO `s2`"),
            Statement::RollbackToSavepoint("s2".into())
        );
        assert_eq!(
            Statement::of(b"rollback to savepoint s2"),
            Statement::RollbackToSavepoint("s2".into())
        );
        assert_eq!(
            Statement::of(b"SAVEPOINT `s1`"),
            Statement::Savepoint("s1".into())
        );
        let xid: Xid = "X'7831',X'',1".parse().unwrap();
        assert_eq!(
            Statement::of(b"XA START X'7831',X'',1"),
            Statement::XaStart(xid.clone())
        );
        assert_eq!(Statement::of(b"XA END X'7831',X'',1"), Statement::XaEnd);
        assert_eq!(
            Statement::of(b"XA COMMIT X'7831',X'',1"),
            Statement::XaCommit(xid.clone())
        );
        assert_eq!(
            Statement::of(b"XA ROLLBACK X'7831',X'',1"),
            Statement::XaRollback(xid)
        );
        assert_eq!(
            Statement::of(b"/* app */ INSERT INTO outbox VALUES (1)"),
            Statement::Insert
        );
        assert_eq!(
            Statement::of(b"replace into t values (1)"),
            Statement::Insert
        );
        assert_eq!(
            Statement::of(b"LOAD DATA INFILE 'x' INTO TABLE t"),
            Statement::Insert
        );
        for other in [
            &b"CREATE TABLE t (a int)"[..],
            b"UPDATE t SET a = 1",
            b"BEGIN WORK x",
            b"",
        ] {
            assert_eq!(Statement::of(other), Statement::Other, "{other:?}");
        }
    }

    #[test]
    fn statements_name_a_table_qualified_or_through_the_default_schema() {
        let sql = |s: &str| s.as_bytes().to_vec();
        assert!(names_table(
            &sql("INSERT INTO `shop`.`outbox` VALUES (1)"),
            "",
            "shop",
            "outbox"
        ));
        assert!(names_table(
            &sql("insert into outbox values (1)"),
            "shop",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into outbox values (1)"),
            "other",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into outbox_archive values (1)"),
            "shop",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into x.outbox values (1)"),
            "shop",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into myshop.outbox values (1)"),
            "",
            "shop",
            "outbox"
        ));
    }
}
