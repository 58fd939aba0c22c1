//! Loading and validating configurations.
use super::*;
use crate::position::BinlogPosition;

pub(super) const MINIMAL: &str = r#"
    [source]
    url = "mysql://cdc:secret@127.0.0.1:3306"
    server_id = 4201

    [[outbox]]
    table = "shop.outbox"

    [nats]
    url = "nats://127.0.0.1:4222"
    stream = "OUTBOX"

    [checkpoint]
    path = "state/shop.checkpoint"
"#;

pub(super) fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load_with_env(&path, env)
}

#[test]
fn minimal_config_gets_debezium_defaults() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.outbox[0].subject, DEFAULT_SUBJECT);
    assert_eq!(c.outbox[0].columns, ColumnMapping::default());
    assert_eq!(c.source.start, StartPosition::Latest);
    assert_eq!(c.nats.ack_window, DEFAULT_ACK_WINDOW);
    assert!(c.nats.exclusive_streams, "the order guard is on by default");
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn publish_mode_defaults_to_per_message_and_atomic_batches_need_the_order_guard() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.nats.publish_mode, PublishMode::PerMessage);
    for (text, mode) in [
        ("per_message", PublishMode::PerMessage),
        ("atomic_batch", PublishMode::AtomicBatch),
        ("auto", PublishMode::Auto),
    ] {
        let c = load(MINIMAL, &[("BINLOG_OUTBOX__NATS__PUBLISH_MODE", text)]).unwrap();
        assert_eq!(c.nats.publish_mode, mode, "{text}");
        assert_eq!(mode.label(), text);
    }
    assert!(load(MINIMAL, &[("BINLOG_OUTBOX__NATS__PUBLISH_MODE", "batched")]).is_err());
    let unguarded = [("BINLOG_OUTBOX__NATS__EXCLUSIVE_STREAMS", "false")];
    let err = load(
        MINIMAL,
        &[
            unguarded[0],
            ("BINLOG_OUTBOX__NATS__PUBLISH_MODE", "atomic_batch"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("nats.publish_mode") && err.contains("exclusive_streams"),
        "{err}"
    );
    let auto = load(
        MINIMAL,
        &[unguarded[0], ("BINLOG_OUTBOX__NATS__PUBLISH_MODE", "auto")],
    );
    assert!(
        auto.is_ok(),
        "auto falls back to per_message without the guard"
    );
}

#[test]
fn the_order_guard_can_be_turned_off_from_the_environment() {
    let c = load(
        MINIMAL,
        &[("BINLOG_OUTBOX__NATS__EXCLUSIVE_STREAMS", "false")],
    )
    .unwrap();
    assert!(!c.nats.exclusive_streams);
}

#[test]
fn environment_overrides_use_double_underscore_and_keep_strings_as_written() {
    let c = load(
        MINIMAL,
        &[
            ("BINLOG_OUTBOX__SOURCE__SERVER_ID", "77"),
            ("BINLOG_OUTBOX__NATS__STREAM", "007"),
            ("BINLOG_OUTBOX__SOURCE__START", "binlog.000003:120"),
        ],
    )
    .unwrap();
    assert_eq!(c.source.server_id, 77);
    assert_eq!(c.nats.stream, "007");
    assert_eq!(
        c.source.start,
        StartPosition::At(BinlogPosition::new("binlog.000003", 120))
    );
}

#[test]
fn unknown_key_is_named() {
    let err = load(
        &MINIMAL.replace("server_id = 4201", "server_id = 4201\nserverid = 1"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("serverid"), "{err}");
    assert!(err.contains("source"), "{err}");
}

#[test]
fn unknown_key_from_environment_is_named() {
    let err = load(MINIMAL, &[("BINLOG_OUTBOX__NATS__STREEM", "X")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("streem"), "{err}");
}

#[test]
fn missing_required_key_is_named() {
    let err = load(&MINIMAL.replace("server_id = 4201", ""), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("server_id"), "{err}");
}

#[test]
fn wrong_type_is_named() {
    let err = load(MINIMAL, &[("BINLOG_OUTBOX__SOURCE__SERVER_ID", "abc")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("source.server_id"), "{err}");
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let toml = MINIMAL
        .replace("server_id = 4201", "server_id = 0")
        .replace(
            "table = \"shop.outbox\"",
            "table = \"outbox\"\nsubject = \"a.{no pe}\"",
        )
        .replace("stream = \"OUTBOX\"", "stream = \"a.b\"\nack_window = 9000");
    let err = load(&toml, &[]).unwrap_err().to_string();
    for path in [
        "source.server_id",
        "outbox[0].table",
        "outbox[0].subject",
        "nats.stream",
        "nats.ack_window",
    ] {
        assert!(err.contains(path), "{path} missing from: {err}");
    }
}

#[test]
fn example_connector_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load_with_env(&path, std::iter::empty())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs in {dir}");
}

#[test]
fn tables_in_different_streams_need_disjoint_subjects() {
    let two = |subject_b: &str| {
        MINIMAL.replace(
            "[[outbox]]\n    table = \"shop.outbox\"",
            &format!(
                "[[outbox]]\ntable = \"shop.outbox\"\nsubject = \"shop.{{aggregatetype}}\"\n\
                 [[outbox]]\ntable = \"billing.events\"\nstream = \"BILLING\"\nsubject = \"{subject_b}\"\n"
            ),
        )
    };
    let c = load(&two("billing.{type}"), &[]).unwrap();
    assert_eq!(c.stream_of(&c.outbox[1]), "BILLING");
    assert_eq!(c.stream_of(&c.outbox[0]), "OUTBOX");
    let err = load(&two("shop.{type}"), &[]).unwrap_err().to_string();
    assert!(
        err.contains("outbox[1].subject") && err.contains("overlaps"),
        "{err}"
    );
}

#[test]
fn start_accepts_positions_and_gtids_of_both_servers() {
    let parse = |s: &str| s.parse::<StartPosition>();
    assert_eq!(parse("latest").unwrap(), StartPosition::Latest);
    assert!(matches!(
        parse("mariadb-bin.000003:120").unwrap(),
        StartPosition::At(_)
    ));
    assert!(matches!(
        parse("0-1-100,1-2-7").unwrap(),
        StartPosition::MariadbGtid(_)
    ));
    let mysql = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100";
    assert!(matches!(parse(mysql).unwrap(), StartPosition::MysqlGtid(_)));
    assert_eq!(parse(mysql).unwrap().to_string(), mysql);
    assert!(parse("0-1").is_err());
}

#[test]
fn reserved_header_names_are_refused_whatever_their_case() {
    for name in [
        "Nats-Msg-Id",
        "nats-expected-last-msg-id",
        "NATS-TTL",
        "Outbox-Table",
    ] {
        let toml = MINIMAL.replace(
            "table = \"shop.outbox\"",
            &format!("table = \"shop.outbox\"\nheaders = {{ {name} = \"tenant\" }}"),
        );
        let err = load(&toml, &[]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("outbox[0].headers.{name}")) && err.contains("reserved"),
            "{name}: {err}"
        );
    }
    let toml = MINIMAL.replace(
        "table = \"shop.outbox\"",
        "table = \"shop.outbox\"\nheaders = { Natsy = \"a\", X-Outbox-Tenant = \"b\" }",
    );
    load(&toml, &[]).expect("only the prefixes are reserved");
}

#[test]
fn bad_start_position_says_what_is_expected() {
    let err = load(MINIMAL, &[("BINLOG_OUTBOX__SOURCE__START", "yesterday")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.start") && err.contains("earliest"),
        "{err}"
    );
}

#[test]
fn zero_timeouts_are_refused_naming_the_key() {
    let toml = MINIMAL
        .replace(
            "server_id = 4201",
            "server_id = 4201\nconnect_timeout_ms = 0",
        )
        .replace(
            "stream = \"OUTBOX\"",
            "stream = \"OUTBOX\"\nconnect_timeout_ms = 0",
        );
    let err = load(&toml, &[]).unwrap_err().to_string();
    for key in ["source.connect_timeout_ms", "nats.connect_timeout_ms"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn the_checkpoint_store_is_a_tagged_section_with_file_as_the_default() {
    let c = load(MINIMAL, &[]).unwrap();
    assert!(
        matches!(&c.checkpoint, CheckpointConfig::File(f) if f.path.ends_with("shop.checkpoint"))
    );
    let explicit = MINIMAL.replace(
        "path = \"state/shop.checkpoint\"",
        "store = \"file\"\npath = \"state/other\"",
    );
    let c = load(&explicit, &[]).unwrap();
    assert!(matches!(&c.checkpoint, CheckpointConfig::File(f) if f.path.ends_with("other")));
    let unknown = MINIMAL.replace("path = \"state/shop.checkpoint\"", "store = \"floppy\"");
    let err = load(&unknown, &[]).unwrap_err().to_string();
    assert!(
        err.contains("checkpoint") && err.contains("floppy"),
        "{err}"
    );
    let stray = MINIMAL.replace(
        "path = \"state/shop.checkpoint\"",
        "path = \"state/x\"\nbucket = \"b\"",
    );
    let err = load(&stray, &[]).unwrap_err().to_string();
    assert!(err.contains("bucket"), "{err}");
}
