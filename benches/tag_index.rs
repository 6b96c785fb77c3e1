//! Cost of matching a request's tags against the tag index, as connections and tags grow.
//!
//! `cargo bench --bench tag_index`. Each connection has a room (100 connections per room), a
//! unique user id and `extra` other tags; throughput is counted in matched connections, so the
//! per-element time is the cost of one delivery's lookup.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tagcast::tags::{TagIndex, Tags};

const PER_ROOM: usize = 100;

fn connection_tags(id: usize, extra: usize) -> Tags {
    let mut pairs = vec![
        ("room".to_owned(), format!("r{}", id / PER_ROOM)),
        ("user".to_owned(), id.to_string()),
    ];
    pairs.extend((0..extra).map(|tag| (format!("t{tag}"), format!("v{}", id % 7))));
    pairs.into_iter().collect()
}

fn index(connections: usize, extra: usize) -> TagIndex<u64, u64> {
    let mut index = TagIndex::default();
    for id in 0..connections {
        index.insert(id as u64, connection_tags(id, extra), id as u64);
    }
    index
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs.iter().copied().collect()
}

/// Calls `for_each_match` and counts the matches (what the hub does, minus the queue push).
fn count(index: &TagIndex<u64, u64>, query: &Tags) -> usize {
    let mut matched = 0;
    index.for_each_match(query, |_, value| {
        black_box(value);
        matched += 1;
    });
    matched
}

fn by_connections(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_by_connections");
    for connections in [1_000, 10_000, 100_000] {
        let index = index(connections, 0);
        let queries = [
            ("room", tags(&[("room", "r3")])),
            ("room+user", tags(&[("room", "r3"), ("user", "342")])),
            ("broadcast", Tags::default()),
            ("nobody", tags(&[("room", "none")])),
        ];
        for (name, query) in &queries {
            let matched = count(&index, query);
            group.throughput(Throughput::Elements(matched.max(1) as u64));
            group.bench_with_input(BenchmarkId::new(*name, connections), query, |b, query| {
                b.iter(|| count(&index, query))
            });
        }
    }
    group.finish();
}

fn by_tags(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_by_tags");
    // Every candidate of the room is checked against a second tag the room's members share
    // partly: the cost of `contains_all` as connections carry more tags.
    for extra in [0, 4, 16, 30] {
        let index = index(10_000, extra);
        let query = match extra {
            0 => tags(&[("room", "r3")]),
            _ => tags(&[("room", "r3"), ("t0", "v1")]),
        };
        let matched = count(&index, &query);
        group.throughput(Throughput::Elements(matched.max(1) as u64));
        group.bench_with_input(
            BenchmarkId::new("room+tag", extra + 2),
            &query,
            |b, query| b.iter(|| count(&index, query)),
        );
    }
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("connect_disconnect");
    for connections in [1_000, 100_000] {
        let mut index = index(connections, 4);
        let tags = connection_tags(connections + 1, 4);
        group.bench_function(BenchmarkId::from_parameter(connections), |b| {
            b.iter(|| {
                index.insert(u64::MAX, tags.clone(), 0);
                black_box(index.remove(u64::MAX))
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = by_connections, by_tags, churn
}
criterion_main!(benches);
