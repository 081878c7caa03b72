//! JSON cannot grow in memory far beyond its size on the wire: a 16 MiB batch of small objects
//! is refused where its budget runs out, and the peak RSS of the sluice process (VmHWM, read
//! from /proc) stays under a stated bound whether it refuses or accepts such a body.

use crate::helpers::{eventually, remove_test_resources, test_settings, DEADLINE};
use serde_json::Value;

/// The bound on sluice's peak resident memory while it handles 16 MiB bodies: the body itself,
/// a batch's parse budget (batches.max_json_bytes, 64 MiB), the 10,000 commands published, and
/// the process's ~40 MiB at rest. Without the budget, the first body took it to 2.9-3.5 GB.
const PEAK_RSS_BOUND_MIB: u64 = 256;

struct Sluice {
    child: tokio::process::Child,
    base: String,
    key: String,
    settings: sluice::config::Settings,
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        remove_test_resources(&self.settings);
    }
}

/// `sluice serve` as its own process, so its memory is its own; it creates its database.
async fn start() -> Sluice {
    let (settings, _) = test_settings();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let key = settings.auth.bootstrap_key.expose().to_owned();
    let child = crate::helpers::serve_command(&settings, port)
        .env("SLUICE__LIMITS__RATE_PER_SECOND", "0")
        .spawn()
        .expect("sluice starts");
    let base = format!("http://127.0.0.1:{port}");
    let s = Sluice { child, base, key, settings };
    eventually(DEADLINE, || async {
        let r = reqwest::get(format!("{}/readyz", s.base)).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    s
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("kiB") / 1024
}

async fn post_batch(s: &Sluice, body: String) -> (u16, Value) {
    assert!(body.len() <= 16 << 20, "within batches.body_limit_bytes");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/batches", s.base))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answered");
    (r.status().as_u16(), r.json().await.expect("json body"))
}

fn batch_of(items: usize, data: &str) -> String {
    let item = format!(r#"{{"type":"event.record","payload":{{"name":"big","data":{data}}}}}"#);
    format!(r#"{{"commands":[{}]}}"#, vec![item; items].join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_bodies_of_small_objects_are_refused_or_accepted_within_a_stated_peak_rss() {
    let s = start().await;
    let pid = s.child.id().expect("pid");
    let at_rest = peak_rss_mib(pid);

    // The measured attack: 110 items, each 20,000 `{"":0}` objects (14.7 MiB on the wire).
    let objects = |n: usize| format!("[{}]", vec![r#"{"":0}"#; n].join(","));
    let (status, body) = post_batch(&s, batch_of(110, &objects(20_000))).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "json_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("(at /commands/0)"), "the first item ran past its own budget: {body}");
    assert!(body["error"]["location"].as_str().unwrap_or_default().starts_with("body line 1 column"), "{body}");

    // Items that each fit their own budget, but not all together (16 MiB of them).
    let item = objects(1_500);
    let (status, body) = post_batch(&s, batch_of((16_000_000 / (item.len() + 60)).min(10_000), &item)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("bytes of memory"), "{body}");

    // And a 16 MiB batch that fits is accepted: 10,000 commands of 1.5 KiB each.
    let text = format!("\"{}\"", "x".repeat(1_530));
    let (status, body) = post_batch(&s, batch_of(10_000, &text)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 10_000, "{body}");

    let peak = peak_rss_mib(pid);
    println!("sluice peak RSS: {at_rest} MiB at rest, {peak} MiB after the three 16 MiB bodies");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak} MiB stays under {PEAK_RSS_BOUND_MIB} MiB");
}
