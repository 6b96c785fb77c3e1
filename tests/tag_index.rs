//! The tag index against the naive rule: for any connections and any query, the index finds
//! exactly the connections a full scan with `Tags::contains_all` finds.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tagcast::tags::{TagIndex, Tags};

/// Tags drawn from a small alphabet, so that queries often match.
fn tags() -> impl Strategy<Value = Tags> {
    prop::collection::vec(("[abc]", "[xyz12]"), 0..4).prop_map(|pairs| pairs.into_iter().collect())
}

/// A sequence of inserts and removals, then queries.
#[derive(Debug, Clone)]
enum Step {
    Insert(u64, Tags),
    Remove(u64),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u64..40, tags()).prop_map(|(id, tags)| Step::Insert(id, tags)),
            1 => (0u64..40).prop_map(Step::Remove),
        ],
        0..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_index_matches_a_naive_scan(steps in steps(), queries in prop::collection::vec(tags(), 1..10)) {
        let mut index: TagIndex<u64, ()> = TagIndex::default();
        let mut naive: Vec<(u64, Tags)> = Vec::new();
        for step in steps {
            match step {
                Step::Insert(id, tags) => {
                    index.insert(id, tags.clone(), ());
                    naive.retain(|(own, _)| *own != id);
                    naive.push((id, tags));
                }
                Step::Remove(id) => {
                    index.remove(id);
                    naive.retain(|(own, _)| *own != id);
                }
            }
        }
        prop_assert_eq!(index.len(), naive.len());
        for query in queries {
            let mut found = BTreeSet::new();
            index.for_each_match(&query, |id, _| {
                assert!(found.insert(id), "visited twice");
            });
            let expected: BTreeSet<u64> = naive
                .iter()
                .filter(|(_, tags)| tags.contains_all(&query))
                .map(|(id, _)| *id)
                .collect();
            prop_assert_eq!(found, expected, "query {}", query);
        }
    }
}
