//! `coffer csi` against a real controller and API server: publish latency of a 10-object volume,
//! change-to-file latency, and the plugin's CPU and memory with 100 volumes mounted, each beside
//! a baseline measured in the same run.
//!
//! Run by `make bench` through `benches/csi.py`, which starts the control plane and the
//! controller and sets the environment `tests/support/csi_cluster.rs` reads. Needs root (tmpfs).

// Bench code: a failed assumption is a failed run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

#[path = "../tests/support/csi_cluster.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Cluster, Plugin, Work, publish_request, unique, unpublish_request, until_file_is};

const PUBLISH_ROUNDS: usize = 200;
const CHANGES: usize = 100;
const VOLUMES: usize = 100;
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// Percentile `p` (0..=100) of `samples`, in milliseconds.
fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

fn summary(samples: &[Duration]) -> (f64, f64) {
    (percentile(samples, 50.0), percentile(samples, 99.0))
}

/// The process's resident memory now and at its peak (KiB), and CPU time so far (seconds).
fn process_stats(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    (field("VmRSS:"), field("VmHWM:"), ticks as f64 / per_second)
}

async fn run() {
    let Some(cluster) = Cluster::from_env().await else {
        eprintln!(
            "benches/csi needs a controller and a namespace: run it through `make bench` \
             (benches/csi.py), which starts them"
        );
        std::process::exit(2);
    };
    let work = Work::new();
    let plugin = Plugin::start(&cluster, work.path(), "csi-bench.log");
    let mut node = plugin.node().await;
    let pid = plugin.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _, _) = process_stats(pid);

    // Ten objects: six secrets (one read for a JSON property), four parameters.
    let mut objects = Vec::new();
    let mut reads = Vec::new();
    for index in 0..6 {
        let name = unique(&format!("bench-secret-{index}"));
        let value = json!({"username": "app", "password": cluster.plaintext("bench")}).to_string();
        cluster
            .call(
                "secretsmanager.CreateSecret",
                json!({"Name": name, "SecretString": value}),
                "csi-admin",
            )
            .await;
        let mut object = json!({"kind": "secret", "name": name, "file": format!("secret-{index}")});
        if index == 0 {
            object["property"] = json!("password");
        }
        objects.push(object);
        reads.push(("secretsmanager.GetSecretValue", json!({"SecretId": name})));
    }
    let path = format!("/{}", unique("bench"));
    for index in 0..4 {
        let name = format!("{path}/p{index}");
        let (type_, value) = if index % 2 == 0 {
            ("String", format!("value-{index}"))
        } else {
            ("SecureString", cluster.plaintext("bench-param"))
        };
        cluster.put_parameter(&name, &value, type_).await;
        objects.push(json!({"kind": "parameter", "name": name, "file": format!("param-{index}")}));
        reads.push((
            "AmazonSSM.GetParameter",
            json!({"Name": name, "WithDecryption": true}),
        ));
    }
    let objects = serde_json::Value::Array(objects).to_string();
    let pod = cluster.pod_token("bench-app", "csi-app").await;

    // Baseline: the volume's ten reads, one after another, as the pod, over the same API.
    let mut baseline = Vec::new();
    for _ in 0..PUBLISH_ROUNDS {
        let start = Instant::now();
        for (target, body) in &reads {
            cluster.call_with(&pod.token, target, body.clone()).await;
        }
        baseline.push(start.elapsed());
    }

    // NodePublishVolume of the ten-object volume, each on a fresh target.
    let mut publishes = Vec::new();
    for round in 0..PUBLISH_ROUNDS {
        let volume = format!("csi-bench-{round}");
        let target = work.target(&volume);
        let request = publish_request(
            &volume,
            &target,
            pod.context(Some(&pod.token), &[("objects", &objects)]),
        );
        let start = Instant::now();
        node.node_publish_volume(request).await.unwrap();
        publishes.push(start.elapsed());
        node.node_unpublish_volume(unpublish_request(&volume, &target))
            .await
            .unwrap();
    }

    // Change to file: PutSecretValue until the mounted file shows the new value; the baseline
    // is PutSecretValue's own latency.
    let changing = unique("bench-changing");
    cluster
        .call(
            "secretsmanager.CreateSecret",
            json!({"Name": changing, "SecretString": cluster.plaintext("bench-change")}),
            "csi-admin",
        )
        .await;
    let watched = json!([{"kind": "secret", "name": changing, "file": "value"}]).to_string();
    let target = work.target("csi-bench-change");
    node.node_publish_volume(publish_request(
        "csi-bench-change",
        &target,
        pod.context(Some(&pod.token), &[("objects", &watched)]),
    ))
    .await
    .unwrap();
    let admin = cluster.token_for("csi-admin", None).await;
    let mut puts = Vec::new();
    let mut changes = Vec::new();
    for _ in 0..CHANGES {
        let value = cluster.plaintext("bench-change");
        let start = Instant::now();
        cluster
            .call_with(
                &admin,
                "secretsmanager.PutSecretValue",
                json!({"SecretId": changing, "SecretString": value}),
            )
            .await;
        puts.push(start.elapsed());
        until_file_is(&target.join("value"), &value).await;
        changes.push(start.elapsed());
    }
    node.node_unpublish_volume(unpublish_request("csi-bench-change", &target))
        .await
        .unwrap();

    // A hundred ten-object volumes, all reading one shared secret too.
    let shared = unique("bench-shared");
    cluster
        .call(
            "secretsmanager.CreateSecret",
            json!({"Name": shared, "SecretString": cluster.plaintext("bench-shared")}),
            "csi-admin",
        )
        .await;
    let mut with_shared: Vec<serde_json::Value> = serde_json::from_str(&objects).unwrap();
    with_shared.push(json!({"kind": "secret", "name": shared, "file": "shared"}));
    let with_shared = serde_json::Value::Array(with_shared).to_string();
    let mut targets = Vec::new();
    for index in 0..VOLUMES {
        let volume = format!("csi-bench-many-{index}");
        let target = work.target(&volume);
        node.node_publish_volume(publish_request(
            &volume,
            &target,
            pod.context(Some(&pod.token), &[("objects", &with_shared)]),
        ))
        .await
        .unwrap();
        targets.push((volume, target));
    }
    let (_, _, cpu_before) = process_stats(pid);
    tokio::time::sleep(IDLE_WINDOW).await;
    let (rss_many, _, cpu_after_idle) = process_stats(pid);
    let idle_cpu = (cpu_after_idle - cpu_before) / IDLE_WINDOW.as_secs_f64() * 100.0;
    // One change that all hundred volumes read.
    let value = cluster.plaintext("bench-shared");
    let start = Instant::now();
    cluster
        .call_with(
            &admin,
            "secretsmanager.PutSecretValue",
            json!({"SecretId": shared, "SecretString": value}),
        )
        .await;
    for (_, target) in &targets {
        until_file_is(&target.join("shared"), &value).await;
    }
    let fan_out = start.elapsed();
    let (_, peak_rss, cpu_after_change) = process_stats(pid);
    let change_cpu = cpu_after_change - cpu_after_idle;
    for (volume, target) in &targets {
        node.node_unpublish_volume(unpublish_request(volume, target))
            .await
            .unwrap();
    }

    let (base50, base99) = summary(&baseline);
    let (pub50, pub99) = summary(&publishes);
    let (put50, put99) = summary(&puts);
    let (chg50, chg99) = summary(&changes);
    println!();
    println!("coffer csi against a real controller and API server");
    println!("| measure | p50 | p99 | baseline (same run) | ratio p99 |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| NodePublishVolume, 10 objects ({PUBLISH_ROUNDS} rounds) | {pub50:.2} ms | {pub99:.2} ms | 10 sequential reads as the pod: p50 {base50:.2} ms, p99 {base99:.2} ms | {:.2}x |",
        pub99 / base99
    );
    println!(
        "| change to file, PutSecretValue ({CHANGES} changes) | {chg50:.1} ms | {chg99:.1} ms | PutSecretValue alone: p50 {put50:.1} ms, p99 {put99:.1} ms | {:.2}x |",
        chg99 / put99
    );
    println!();
    println!("| with {VOLUMES} volumes mounted (11 objects each) | value |");
    println!("| --- | --- |");
    println!(
        "| RSS | {} KiB ({:.1} MiB; {:.1} MiB with no volume, {:.2}x) |",
        rss_many,
        rss_many as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
        rss_many as f64 / idle_rss as f64
    );
    println!("| peak RSS (VmHWM) | {:.1} MiB |", peak_rss as f64 / 1024.0);
    println!(
        "| CPU while idle over {}s | {idle_cpu:.2}% of one core |",
        IDLE_WINDOW.as_secs()
    );
    println!(
        "| one change read by all {VOLUMES} volumes | all files current after {:.0} ms; {:.3} CPU-seconds |",
        fan_out.as_secs_f64() * 1000.0,
        change_cpu
    );
    plugin.kill();
}
