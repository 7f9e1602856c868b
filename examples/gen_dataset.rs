//! Deterministic benchmark data in the graph dump format.
//!
//! `cargo run --release --example gen_dataset -- --feedback 100000 --adapters 1000 --seed 1 --out data.jsonl`
//!
//! Shape: adapters in a forest (one root `base_model` holding about 90% of them, three
//! other roots, depth at most 12); Zipf-like adapter popularity; each item has 1-3
//! FEEDBACK_FOR links, the extra ones to a relative (parent, child or sibling) of the first
//! adapter, so shared-feedback pairs exist; about 65% positive; 90/1/8/1% approved, pending,
//! rejected, flagged; 25% used for training; five model versions.

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

struct Args {
    feedback: usize,
    adapters: usize,
    seed: u64,
    out: String,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        feedback: 100_000,
        adapters: 1_000,
        seed: 1,
        out: "dataset.jsonl".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--feedback" => a.feedback = num()?,
            "--adapters" => a.adapters = num()?.max(4),
            "--seed" => a.seed = num()? as u64,
            "--out" => a.out = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

const MODELS: [&str; 5] = [
    "llama-2-7b",
    "llama-3-8b",
    "mistral-7b",
    "qwen-2-7b",
    "phi-3-mini",
];
const TOPICS: [&str; 12] = [
    "sharding",
    "replication",
    "vector indexes",
    "backups",
    "transactions",
    "TLS certificates",
    "JSON queries",
    "query planning",
    "memory limits",
    "leases",
    "change feeds",
    "compaction",
];
const VERBS: [&str; 6] = ["enable", "configure", "monitor", "tune", "disable", "debug"];

fn main() -> Result<(), String> {
    let a = args()?;
    let mut rng = StdRng::seed_from_u64(a.seed);
    let file = std::fs::File::create(&a.out).map_err(|e| format!("{}: {e}", a.out))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut w = |v: serde_json::Value| writeln!(out, "{v}").map_err(|e| e.to_string());

    // The forest.
    let base_ms: u64 = 1_780_000_000_000;
    let mut ids: Vec<String> = Vec::with_capacity(a.adapters);
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(a.adapters);
    let mut depth: Vec<usize> = Vec::with_capacity(a.adapters);
    let mut tree: Vec<usize> = Vec::with_capacity(a.adapters);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); a.adapters];
    for i in 0..a.adapters {
        let (id, p) = match i {
            0 => ("base_model".to_owned(), None),
            1..=3 => (format!("root_{i}"), None),
            _ => {
                let want_tree = if rng.random_bool(0.9) {
                    0
                } else {
                    rng.random_range(1..=3)
                };
                // A random earlier adapter of that tree that can still take a child.
                let mut p = None;
                for _ in 0..64 {
                    let c = rng.random_range(0..i);
                    if tree[c] == want_tree && depth[c] < 12 {
                        p = Some(c);
                        break;
                    }
                }
                (format!("adapter_{i:05}"), Some(p.unwrap_or(want_tree)))
            }
        };
        let d = p.map_or(0, |p| depth[p] + 1);
        tree.push(p.map_or(i, |p| tree[p]));
        depth.push(d);
        parent.push(p);
        if let Some(p) = p {
            children[p].push(i);
        }
        let rank = [8, 16, 32, 64][i % 4];
        let status = if rng.random_bool(0.9) {
            "active"
        } else {
            "retired"
        };
        w(json!({
            "kind": "adapter", "id": id, "name": format!("{id} ({})", TOPICS[i % TOPICS.len()]),
            "rank": rank, "status": status,
            "created_at": base_ms + i as u64 * 60_000,
        }))?;
        ids.push(id);
    }
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            w(json!({"kind": "derived_from", "from": ids[i], "to": ids[*p]}))?;
        }
    }

    // Zipf-like popularity over a random order of adapters.
    let mut order: Vec<usize> = (0..a.adapters).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut cumulative = Vec::with_capacity(a.adapters);
    let mut total = 0.0;
    for rank in 0..a.adapters {
        total += 1.0 / (rank as f64 + 1.0);
        cumulative.push(total);
    }
    let pick = |rng: &mut StdRng| {
        let x = rng.random::<f64>() * total;
        order[cumulative.partition_point(|&c| c < x).min(a.adapters - 1)]
    };

    let mut links: Vec<(usize, usize)> = Vec::with_capacity(a.feedback * 3 / 2);
    for i in 0..a.feedback {
        let positive = rng.random_bool(0.65);
        let status = match rng.random_range(0..100) {
            0..90 => "approved",
            90 => "pending",
            91..99 => "rejected",
            _ => "flagged",
        };
        let used = status == "approved" && rng.random_bool(0.25 / 0.9);
        let topic = TOPICS[rng.random_range(0..TOPICS.len())];
        let verb = VERBS[rng.random_range(0..VERBS.len())];
        let first = pick(&mut rng);
        let mut item = json!({
            "kind": "feedback",
            "id": format!("fb_{i:08}"),
            "type": if positive { "positive" } else { "negative" },
            "validation_status": status,
            "used_for_training": used,
            "model_version": MODELS[rng.random_range(0..MODELS.len())],
            "question": format!("How do I {verb} {topic} on a cluster with {} nodes?", rng.random_range(3..64)),
            "answer": format!("To {verb} {topic}, open the admin console, choose the cluster, and apply the {topic} policy; then check the status page after {} minutes.", rng.random_range(1..30)),
            "created_at": base_ms + 86_400_000 + i as u64 * 500,
            "user_id": format!("user{:05}", rng.random_range(0..20_000)),
            "session_id": format!("s{:07}", i / 4),
            "adapter_id": ids[first],
        });
        if !positive && rng.random_bool(0.6) {
            item["correction"] = json!(format!(
                "Use ALTER CLUSTER SET {topic} = on, then restart the coordinators."
            ));
        }
        if used {
            item["training_batch_id"] = json!(1 + i / 5_000);
        }
        w(item)?;
        links.push((i, first));
        let extra = match rng.random_range(0..10) {
            0..6 => 0,
            6..9 => 1,
            _ => 2,
        };
        let mut taken = vec![first];
        for _ in 0..extra {
            let mut relatives: Vec<usize> = children[first].clone();
            if let Some(p) = parent[first] {
                relatives.push(p);
                relatives.extend(children[p].iter().copied().filter(|&s| s != first));
            }
            relatives.retain(|r| !taken.contains(r));
            if relatives.is_empty() {
                break;
            }
            let r = relatives[rng.random_range(0..relatives.len())];
            taken.push(r);
            links.push((i, r));
        }
    }
    for (f, ad) in links {
        w(json!({"kind": "feedback_for", "from": format!("fb_{f:08}"), "to": ids[ad]}))?;
    }
    out.flush().map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} ({} feedback, {} adapters)",
        a.out, a.feedback, a.adapters
    );
    Ok(())
}
