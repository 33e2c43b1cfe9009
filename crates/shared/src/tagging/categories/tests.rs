use std::collections::{BTreeMap, BTreeSet};

use super::*;
use proptest::prelude::*;

const WORDNET: &str = include_str!("wordnet.tsv");
const SELECTION: &str = include_str!("selection.tsv");

fn l(label: &str, score: f64) -> Label {
    Label {
        label: label.into(),
        score,
    }
}

fn score_of(categories: &[Category], name: &str) -> Option<f64> {
    categories.iter().find(|c| c.name == name).map(|c| c.score)
}

fn cats(label: &str) -> BTreeSet<&'static str> {
    of_label(label).collect()
}

/// The table as `scripts/gen-categories.py` derives it from the two text files: the category
/// names in order, and each label's category names.
fn derive() -> (Vec<String>, BTreeMap<String, BTreeSet<String>>) {
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut class_labels: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in WORDNET
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split('\t');
        let (synset, ps, ls) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        assert!(fields.next().is_none(), "{line}");
        parents.insert(synset, ps.split_whitespace().collect());
        if !ls.is_empty() {
            class_labels.push((synset, ls.split('|').collect()));
        }
    }
    assert_eq!(class_labels.len(), 1000, "the 1000 ImageNet classes");
    let mut names = Vec::new();
    let mut selections = Vec::new();
    for line in SELECTION
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, synsets) = line.split_once('\t').unwrap();
        let (mut include, mut exclude) = (BTreeSet::new(), BTreeSet::new());
        for s in synsets.split_whitespace() {
            let (set, s) = match s.strip_prefix('-') {
                Some(s) => (&mut exclude, s),
                None => (&mut include, s),
            };
            assert!(parents.contains_key(s), "{name}: {s} is not in wordnet.tsv");
            set.insert(s);
        }
        assert!(!names.contains(&name.to_string()), "{name} twice");
        names.push(name.to_string());
        selections.push((include, exclude));
    }
    let up = |synset: &'static str| -> BTreeSet<&'static str> {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![synset]);
        while let Some(x) = todo.pop() {
            if seen.insert(x) {
                todo.extend(parents[x].iter().copied());
            }
        }
        seen
    };
    let mut members: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_label: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (synset, labels) in &class_labels {
        let chain = up(synset);
        let set: BTreeSet<String> = selections
            .iter()
            .zip(&names)
            .filter(|((inc, exc), _)| {
                inc.iter().any(|s| chain.contains(s)) && !exc.iter().any(|s| chain.contains(s))
            })
            .map(|(_, name)| name.clone())
            .collect();
        for name in &set {
            *members.entry(name.clone()).or_default() += 1;
        }
        for label in labels {
            // A label that names several classes gets what they share.
            let entry = by_label
                .entry(label.to_string())
                .or_insert_with(|| set.clone());
            *entry = entry.intersection(&set).cloned().collect();
        }
    }
    by_label.retain(|_, set| !set.is_empty());
    // From the most specific (fewest classes) to the most general.
    names.sort_by_key(|n| (members.get(n).copied().unwrap_or(0), n.clone()));
    (names, by_label)
}

#[test]
fn the_table_is_current() {
    // Fails when table.rs, selection.tsv or wordnet.tsv changed without the others: run
    // scripts/gen-categories.py.
    let (names, by_label) = derive();
    assert_eq!(super::names().collect::<Vec<_>>(), names, "category names");
    let labels: Vec<&str> = table::LABELS.split_terminator('\n').collect();
    assert_eq!(
        labels,
        by_label.keys().map(String::as_str).collect::<Vec<_>>(),
        "labels with a category"
    );
    for (label, expected) in &by_label {
        let got: BTreeSet<String> = of_label(label).map(String::from).collect();
        assert_eq!(&got, expected, "categories of {label:?}");
    }
}

#[test]
fn the_table_is_well_formed() {
    let labels: Vec<&str> = table::LABELS.split_terminator('\n').collect();
    assert!(labels.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
    assert!(table::LABELS.ends_with('\n') && table::NAMES.ends_with('\n'));
    assert_eq!(table::LABEL_SETS.len(), labels.len());
    assert_eq!(names().count(), table::COUNT);
    assert!(
        table::COUNT < usize::from(u8::MAX),
        "ids are bytes, 255 ends a set"
    );
    let sets: Vec<&[u8]> = table::SETS.split(|&id| id == u8::MAX).collect();
    assert_eq!(
        sets.last(),
        Some(&&[][..]),
        "the last set is terminated too"
    );
    let sets = &sets[..sets.len() - 1];
    assert!(sets
        .iter()
        .all(|s| !s.is_empty() && s.windows(2).all(|w| w[0] < w[1])));
    assert!(sets
        .iter()
        .flat_map(|s| s.iter())
        .all(|&id| usize::from(id) < table::COUNT));
    assert!(table::LABEL_SETS
        .iter()
        .all(|&s| usize::from(s) < sets.len()));
}

#[test]
fn a_searchable_set_without_abstract_levels() {
    let n = names().count();
    assert!((100..=300).contains(&n), "{n} categories");
    for abstract_level in [
        "entity",
        "physical entity",
        "object",
        "whole",
        "artifact",
        "living thing",
        "organism",
        "instrumentality",
        "device",
        "container",
        "covering",
        "matter",
        "abstraction",
    ] {
        assert!(!is_category(abstract_level), "{abstract_level}");
    }
    for wanted in [
        "animal",
        "dog",
        "cat",
        "bird",
        "fish",
        "insect",
        "vehicle",
        "car",
        "boat",
        "aircraft",
        "food",
        "fruit",
        "vegetable",
        "furniture",
        "clothing",
        "building",
        "musical instrument",
        "tool",
    ] {
        assert!(is_category(wanted), "{wanted}");
    }
    assert!(names().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b' ')));
}

#[test]
fn the_readme_cat_is_a_cat() {
    let labels = [
        l("EGYPTIAN CAT", 0.389),
        l("TIGER CAT", 0.326),
        l("TABBY", 0.172),
        l("LYNX", 0.034),
        l("TIGER", 0.01),
    ];
    let got = categorise(&labels, 0.8);
    assert!(score_of(&got, "cat").unwrap() >= 0.8);
    assert_eq!(score_of(&got, "cat"), Some(0.887));
    // The lynx is a feline too (a wild cat), and the tiger a big cat.
    assert_eq!(score_of(&got, "feline"), Some(0.931));
    assert_eq!(score_of(&got, "mammal"), Some(0.931));
    assert_eq!(score_of(&got, "animal"), Some(0.931));
    assert_eq!(
        score_of(&got, "wild cat"),
        None,
        "0.034: below the threshold"
    );
    assert_eq!(score_of(&got, "dog"), None);
    assert!(
        got.windows(2).all(|w| w[0].score >= w[1].score),
        "best first"
    );
    // Below 0.8 nothing but the threshold changes.
    assert_eq!(score_of(&categorise(&labels, 0.0), "wild cat"), Some(0.034));
}

#[test]
fn dog_breeds_add_up_to_dog() {
    let got = categorise(
        &[l("GOLDEN RETRIEVER", 0.5), l("LABRADOR RETRIEVER", 0.4)],
        0.8,
    );
    assert_eq!(score_of(&got, "dog"), Some(0.9));
    assert_eq!(score_of(&got, "retriever"), Some(0.9));
    assert_eq!(score_of(&got, "animal"), Some(0.9));
    assert_eq!(score_of(&got, "cat"), None);
}

#[test]
fn scores_are_strictly_above_the_threshold() {
    let labels = [l("ESPRESSO", 0.8)];
    assert!(categorise(&labels, 0.8).is_empty());
    let got = categorise(&[l("ESPRESSO", 0.81)], 0.8);
    let names: Vec<&str> = got.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["coffee", "drink"], "ties: the more specific first");
}

#[test]
fn labels_match_by_text_in_any_case() {
    assert!(cats("tabby").contains("cat"));
    assert_eq!(cats("Tabby"), cats("TABBY"));
    assert_eq!(cats("  tabby "), cats("TABBY"));
    assert_eq!(
        cats("tabby, tabby cat"),
        cats("TABBY"),
        "the first name counts"
    );
    assert!(cats("no such class").is_empty());
    assert!(cats("").is_empty());
    assert!(cats("é").is_empty());
    // The classifier's name and WordNet's first lemma both work.
    assert!(cats("CRANE BIRD").contains("bird"));
    // CRANE names a bird and a machine: only what the two share.
    assert!(!cats("CRANE").contains("bird"));
    assert!(cats("MAILLOT").contains("clothing"));
}

#[test]
fn a_repeated_label_counts_once_and_bad_scores_count_as_zero() {
    let got = categorise(&[l("TABBY", 0.5), l("tabby", 0.5)], 0.0);
    assert_eq!(score_of(&got, "cat"), Some(0.5));
    let got = categorise(
        &[
            l("TABBY", f64::NAN),
            l("TIGER CAT", -1.0),
            l("PERSIAN CAT", f64::INFINITY),
        ],
        0.0,
    );
    assert!(got.is_empty(), "{got:?}");
}

proptest! {
    /// Whatever the answer: every score is in (min_score, 1], every category is known, and a
    /// category scores at least as much as any one of its labels (capped at 1).
    #[test]
    fn sums_are_bounded(
        picks in proptest::collection::vec((0usize..2000, 0.0f64..1.0), 0..8),
        min_score in 0.0f64..1.0,
    ) {
        let labels: Vec<&str> = table::LABELS.split_terminator('\n').collect();
        let mut answer: Vec<Label> = Vec::new();
        for &(i, s) in &picks {
            let label = labels.get(i).copied().unwrap_or("not a class");
            if !answer.iter().any(|a| a.label == label) {
                answer.push(l(label, s));
            }
        }
        let got = categorise(&answer, min_score);
        for c in &got {
            prop_assert!(c.score > min_score && c.score <= 1.0);
            prop_assert!(is_category(&c.name));
        }
        for label in &answer {
            for name in of_label(&label.label) {
                let rounded = ((label.score * 1e6).round() / 1e6).min(1.0);
                if rounded > min_score {
                    prop_assert!(score_of(&got, name).unwrap() >= rounded - 1e-6);
                }
            }
        }
    }
}
