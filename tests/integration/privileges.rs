//! Least privilege: the connector runs with only the documented grants (every test uses such a
//! user), and each missing grant is named.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_missing_grant_is_named_with_the_grant_statement_to_fix_it() {
    let env = TestEnv::start("grants").await;
    let schema = &env.schema;
    let cases = [
        (
            "no_repl",
            format!(
                "GRANT BINLOG MONITOR ON *.* TO no_repl@'%'; GRANT SELECT ON {schema}.* TO no_repl@'%'"
            ),
            "REPLICATION SLAVE",
        ),
        (
            "no_monitor",
            format!(
                "GRANT REPLICATION SLAVE ON *.* TO no_monitor@'%'; GRANT SELECT ON {schema}.* TO no_monitor@'%'"
            ),
            "BINLOG MONITOR",
        ),
        (
            "no_select",
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO no_select@'%'".to_string(),
            "GRANT SELECT",
        ),
    ];
    for (user, grants, named) in cases {
        env.exec_root(&format!(
            "CREATE USER {user}@'%' IDENTIFIED BY 'pw'; {grants}"
        ))
        .await;
        let toml = env.config_toml(None).replace(
            &env.db.url_for("cdc", CDC_PASSWORD),
            &env.db.url_for(user, "pw"),
        );
        let msg = InProcess::start(env.config_from(&toml))
            .failure()
            .await
            .to_string();
        assert!(
            msg.contains("preflight checks failed") && msg.contains(named),
            "{user}: {msg}"
        );
    }
}
