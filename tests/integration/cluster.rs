//! A JetStream cluster of three nats-servers that loses the stream leader's node mid-stream.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::support::servers::{Nats, default_nats, free_port};
use crate::support::*;

/// Three clustered nodes on loopback: returns them, node 0 first.
fn start_cluster() -> Vec<Nats> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list = routes
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Started in parallel: each node waits for its peers' routes before JetStream is up.
    let nodes: Vec<_> = routes
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let extra = format!(
                "server_name: n{i}\ncluster {{\n  name: bo\n  listen: 127.0.0.1:{port}\n  routes: [{route_list}]\n}}\n"
            );
            std::thread::spawn(move || Nats::start_binary(default_nats(), &extra))
        })
        .collect();
    nodes.into_iter().map(|n| n.join().unwrap()).collect()
}

/// The stream's leader node, once the stream has one and every replica is current.
async fn leader_of(js: &jetstream::Context, stream: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = js.get_stream(stream).await
            && let Ok(info) = s.info().await
            && let Some(cluster) = &info.cluster
            && let Some(leader) = &cluster.leader
            && cluster.replicas.len() == 2
            && cluster.replicas.iter().all(|r| r.current)
        {
            return leader.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stream {stream} has no leader with current replicas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leaders_node_mid_stream_loses_and_repeats_nothing() {
    let mut nodes = start_cluster();
    let urls = nodes.iter().map(Nats::url).collect::<Vec<_>>().join(",");
    let env = TestEnv::start_on("cluster", &[], nodes.remove(0)).await;
    let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    // Wait for the cluster's JetStream (a meta leader answers account info) before the
    // connector creates its stream.
    let start = Instant::now();
    let answered = |reply: Result<async_nats::Message, _>| {
        reply.is_ok_and(|m| !String::from_utf8_lossy(&m.payload).contains("\"error\""))
    };
    while !answered(client.request("$JS.API.INFO", "".into()).await) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no JetStream meta leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let toml = env.config_toml(None).replace(
        &format!("url = \"{}\"", env.nats.url()),
        &format!("url = \"{urls}\"\nstream_replicas = 3"),
    );
    let config = env.write_config("connector.toml", &toml);
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;

    let all = events(1, 3_000, 20);
    // Half before and during the kill, half after the node is back (however slow the
    // machine, the second half is published after the kill).
    let first_half = spawn_writer(&env, &all[..1_500], 10, Duration::from_millis(10));
    let stream = env.stream.clone();
    let reached = stream_reaches(
        &js,
        &stream,
        500,
        // A new R3 stream may take a while to elect its leader on a loaded machine, and the
        // connector's retries back off meanwhile.
        Duration::from_secs(120),
        Duration::from_millis(50),
    )
    .await;
    if let Err(missing) = reached {
        panic!("{missing}; connector log:\n{}", connector.log_text());
    }
    let leader = leader_of(&js, &stream).await;
    // nodes[] holds n1 and n2; node 0 is the environment's.
    let mut env = env;
    let victim: &mut Nats = match leader.as_str() {
        "n0" => &mut env.nats,
        "n1" => &mut nodes[0],
        _ => &mut nodes[1],
    };
    victim.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    victim.start_again();
    first_half.await.unwrap();
    let second_half = spawn_writer(&env, &all[1_500..], 10, Duration::from_millis(10));
    second_half.await.unwrap();
    let reached = stream_reaches(
        &js,
        &stream,
        all.len() as u64,
        Duration::from_secs(120),
        Duration::from_millis(100),
    )
    .await;
    if let Err(missing) = reached {
        panic!("{missing}; connector log:\n{}", connector.log_text());
    }
    // Every replica, the restarted one too, ends with the same messages.
    leader_of(&js, &stream).await;
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&read_stored_messages(&js, &stream).await, &all);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stream created"), "{text}");
}
