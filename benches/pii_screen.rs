//! What PII screening adds to a submit: `Validator::validate` (shape checks, screening,
//! the basic plugin) on a chat-sized item with the default `[pii]` settings, with every
//! detector off, and on an item that holds a value for every detector (all redacted).
//!
//! Run: `cargo bench --bench pii_screen`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use feedgraph::model::NewFeedback;
use feedgraph::validate::{PiiConfig, PiiMode, ValidationConfig, Validator};

fn clean() -> NewFeedback {
    NewFeedback {
        feedback_type: Some("negative".into()),
        question: Some("How do I enable sharding in ThemisDB? Please explain the steps.".into()),
        answer: Some(
            "Use the SHARD BY clause in CREATE COLLECTION, then run REBALANCE so that the \
             cluster moves existing data onto the new shards. Version 2.4 added online \
             rebalancing; before that, writes paused for about 30 seconds per 10 GB."
                .into(),
        ),
        correction: Some(
            "Since 3.0 use ALTER COLLECTION ... SHARD BY key; REBALANCE is automatic.".into(),
        ),
        comment: Some("The answer describes the 2.x syntax, which was removed.".into()),
        user_id: Some("user123".into()),
        model_version: Some("llama-2-7b".into()),
        adapter_id: Some("themis_help_lora".into()),
        metadata:
            serde_json::json!({"source": "widget", "latency_ms": 812, "tags": ["sql", "sharding"]})
                .as_object()
                .cloned(),
        ..NewFeedback::default()
    }
}

fn with_pii() -> NewFeedback {
    let mut n = clean();
    n.question = Some("Mail jane.doe@example.com or call +44 20 7946 0958 about my card?".into());
    n.answer = Some(
        "Use sk-proj-4fT9aQ2LmZ8xYbN3cV7kR1sW6eJ0hU5g with AKIAIOSFODNN7EXAMPLE from \
         203.0.113.42 or 2001:db8::8a2e:370:7334."
            .into(),
    );
    n.comment = Some(
        "Pay 4111 1111 1111 1111 or DE89 3704 0044 0532 0130 00; token \
         eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
            .into(),
    );
    n
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pii_screen");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let base = Validator::from_config(&ValidationConfig::default()).expect("validator");
    let default = base.with_pii(&PiiConfig::default()).expect("patterns");
    let off = Validator::from_config(&ValidationConfig::default())
        .expect("validator")
        .with_pii(&PiiConfig::all(PiiMode::Off))
        .expect("patterns");
    let redact = Validator::from_config(&ValidationConfig::default())
        .expect("validator")
        .with_pii(&PiiConfig::all(PiiMode::Redact))
        .expect("patterns");
    let (clean, dirty) = (clean(), with_pii());
    group.bench_function("clean_item/pii_off", |b| {
        b.iter(|| black_box(off.validate(black_box(clean.clone()))))
    });
    group.bench_function("clean_item/pii_default", |b| {
        b.iter(|| black_box(default.validate(black_box(clean.clone()))))
    });
    group.bench_function("clean_item/pii_all_redact", |b| {
        b.iter(|| black_box(redact.validate(black_box(clean.clone()))))
    });
    group.bench_function("every_detector_fires/pii_all_redact", |b| {
        b.iter(|| black_box(redact.validate(black_box(dirty.clone()))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
