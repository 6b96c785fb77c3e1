//! What compressing a message once costs (issue 20), against building its plain frame.
//!
//! `cargo bench --bench compression`. The message is a ~600-byte JSON notification, as an
//! application sends. The server builds the compressed frame once per message, whatever the
//! number of recipients: divide the time by the recipients to get its share per delivery. The
//! sizes printed first are the bytes on the wire for one delivery, plain and compressed.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tagcast::wire::frame::MessageFrames;

/// A notification of about 600 bytes (the same shape as tests/compression.rs).
fn notification() -> String {
    let items: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"id":{i},"title":"Order {i} shipped","url":"https://shop.example.com/orders/{i}","status":"shipped"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"type":"notification","user":"42","items":[{}]}}"#,
        items.join(",")
    )
}

fn frames(c: &mut Criterion) {
    let message = notification();
    let both = MessageFrames::text(&message, true);
    println!(
        "bytes on the wire per delivery: plain {} B, compressed {} B ({:.1}x fewer)",
        both.for_recipient(false).len(),
        both.for_recipient(true).len(),
        both.for_recipient(false).len() as f64 / both.for_recipient(true).len() as f64
    );
    let mut group = c.benchmark_group("frames of a 600-byte message");
    group.bench_function("plain only", |b| {
        b.iter(|| MessageFrames::text(black_box(&message), false))
    });
    group.bench_function("plain and compressed", |b| {
        b.iter(|| MessageFrames::text(black_box(&message), true))
    });
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
