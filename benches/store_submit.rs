//! Durable submit throughput at the store level: 1, 8 and 64 concurrent writers, with and
//! without group commit. Each measured submit is a full transaction (record, history, auto
//! link) followed by sled flush + fdatasync.
//!
//! Run: `cargo bench --bench store_submit`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use feedgraph::model::{
    Actor, ChangeAction, Feedback, FeedbackType, IdGenerator, Metadata, ValidationStatus,
    now_millis,
};
use feedgraph::store::sled_store::SyncMode;
use feedgraph::store::{Durability, SledStore as Store, StorageConfig};

fn record(ids: &IdGenerator, n: u64) -> Feedback {
    let at = now_millis();
    Feedback {
        id: ids.next_at(at),
        org_id: "bench".into(),
        feedback_type: FeedbackType::Positive,
        validation_status: ValidationStatus::Approved,
        validation_reasons: Vec::new(),
        created_at: at,
        updated_at: at,
        version: 1,
        used_for_training: false,
        training_batch_id: 0,
        model_version: Some("llama-2-7b".into()),
        adapter_id: Some(format!("adapter_{}", n % 16)),
        adapter_version: Some("v1".into()),
        user_id: Some(format!("user{}", n % 100)),
        session_id: Some(format!("s{}", n / 10)),
        interaction_id: None,
        score: None,
        question: "How do I enable sharding in ThemisDB? Please explain the steps.".into(),
        answer: "Use the SHARD BY clause in CREATE COLLECTION, then run REBALANCE so that the \
                 cluster moves existing data onto the new shards."
            .into(),
        correction: None,
        comment: None,
        metadata: Metadata::default(),
        pii: Vec::new(),
        kind: Default::default(),
        label: None,
        provider: None,
        score_config: None,
        erased_at: None,
        erased_by: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_submit");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for group_commit in [true, false] {
        for writers in [1usize, 8, 64] {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = StorageConfig {
                durability: Durability::Fsync,
                group_commit,
                cache_mb: 64,
                ..StorageConfig::default()
            };
            let store = Arc::new(Store::open(dir.path(), &config).expect("open store"));
            let ids = Arc::new(IdGenerator::new());
            let counter = Arc::new(AtomicU64::new(0));
            let name = if group_commit {
                "group_commit"
            } else {
                "one_sync_each"
            };
            group.throughput(Throughput::Elements(writers as u64));
            group.bench_with_input(BenchmarkId::new(name, writers), &writers, |b, &writers| {
                // One "iteration" is one submit by each of the writers at once.
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..writers {
                            let (store, ids, counter) = (&store, &ids, &counter);
                            s.spawn(move || {
                                let actor = Actor::new("bench", "bench");
                                for _ in 0..iters {
                                    let n = counter.fetch_add(1, Ordering::Relaxed);
                                    store
                                        .insert_feedback(
                                            &actor,
                                            &record(ids, n),
                                            ChangeAction::Submit,
                                            SyncMode::Wait,
                                        )
                                        .expect("submit");
                                }
                            });
                        }
                    });
                    start.elapsed()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
