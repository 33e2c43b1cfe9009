//! Tags and categories of real photos on the offline classifier (issue 23): how many photos
//! get at least one tag at `MIN_SCORE`, how many a tag or a category, and whether the
//! categories given are right. `bench/real-photos.py` fetches the photos and runs it.
//!
//!   cargo run -p local-ai --example categories_photos -- [--model-dir DIR] [--min-score 0.8] \
//!       [--json] PHOTO=expected,categories ...
//!
//! Each argument is a photo and the categories it shows (`chelsea.png=cat`; nothing after
//! `=` for a photo showing nothing ImageNet has a class for). A category given is right if
//! it is one of them or contains one of them (every class of `cat` is a `mammal`, so
//! `mammal` is right for a cat); any other is wrong. Prints a Markdown table and a summary,
//! or with `--json` one JSON object (`bench/tables.mjs` renders it in BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use shared::tagging::categories::{self, Category};
use shared::tagging::labels::{confident, Label};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut model_dir = local_ai::default_model_dir();
    let mut min_score = 0.8;
    let mut json = false;
    let mut photos: Vec<(PathBuf, Vec<String>)> = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--model-dir" => model_dir = args.next().expect("--model-dir DIR").into(),
            "--min-score" => {
                min_score = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--min-score NUMBER")
            }
            _ => {
                let (path, expected) = arg.split_once('=').unwrap_or((&arg, ""));
                let expected: Vec<String> = expected
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for name in &expected {
                    assert!(categories::is_category(name), "{name} is no category");
                }
                photos.push((path.into(), expected));
            }
        }
    }
    let classifier =
        local_ai::Classifier::load(&model_dir).expect("the model (scripts/fetch-model.sh)");

    // Which categories contain which: a category's classes, by label.
    let labels_file = model_dir.join(local_ai::LABELS_FILE);
    let all_labels = std::fs::read_to_string(&labels_file).expect("the labels file");
    let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for label in all_labels.lines() {
        for name in categories::of_label(label) {
            members.entry(name).or_default().insert(label);
        }
    }
    let contains = |outer: &str, inner: &str| -> bool {
        match (members.get(outer), members.get(inner)) {
            (Some(o), Some(i)) => i.is_subset(o),
            _ => false,
        }
    };

    let fmt = |cs: &[Category]| -> String {
        cs.iter()
            .map(|c| format!("{} {:.2}", c.name, c.score))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !json {
        println!("| photo | top label | tags | categories | shows | verdict |");
        println!("|---|---|---|---|---|---|");
    }
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let (mut tagged, mut tagged_or_categorised, mut right, mut wrong_photos) = (0, 0, 0, 0);
    let (mut with_subject, mut right_with_subject) = (0, 0);
    let mut wrong_given: Vec<String> = Vec::new();
    for (path, expected) in &photos {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let labels: Vec<Label> = classifier
            .classify_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
            .into_iter()
            .map(|p| Label {
                label: p.label,
                score: f64::from(p.score),
            })
            .collect();
        let tags = confident(&labels, min_score);
        let cats = categories::categorise(&labels, min_score);
        let is_right = |name: &str| expected.iter().any(|e| e == name || contains(name, e));
        let good = cats.iter().any(|c| is_right(&c.name));
        let bad: Vec<&str> = cats
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !is_right(n))
            .collect();
        tagged += usize::from(!tags.is_empty());
        tagged_or_categorised += usize::from(!tags.is_empty() || !cats.is_empty());
        right += usize::from(good);
        wrong_photos += usize::from(!bad.is_empty());
        if !expected.is_empty() {
            with_subject += 1;
            right_with_subject += usize::from(good);
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        wrong_given.extend(
            bad.iter()
                .map(|b| format!("{} on {}", b, name.clone().unwrap_or_default())),
        );
        rows.push(serde_json::json!({
            "photo": name.clone().unwrap_or_default(),
            "labels": labels.iter().map(|l| serde_json::json!({"label": l.label, "score": l.score})).collect::<Vec<_>>(),
            "tags": tags.iter().map(|t| t.label.clone()).collect::<Vec<_>>(),
            "categories": cats.iter().map(|c| serde_json::json!({"name": c.name, "score": c.score})).collect::<Vec<_>>(),
            "shows": expected,
            "right": good,
            "wrong": bad,
        }));
        if json {
            continue;
        }
        let verdict = match (good, bad.is_empty(), cats.is_empty()) {
            (_, false, _) => format!("wrong: {}", bad.join(", ")),
            (true, true, _) => "right".to_string(),
            (false, true, true) if expected.is_empty() => "none (right)".to_string(),
            (false, true, _) => "none".to_string(),
        };
        println!(
            "| {} | {} {:.2} | {} | {} | {} | {} |",
            name.unwrap_or_default(),
            labels.first().map(|l| l.label.as_str()).unwrap_or("-"),
            labels.first().map_or(0.0, |l| l.score),
            tags.iter()
                .map(|t| t.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            fmt(&cats),
            if expected.is_empty() {
                "(no ImageNet subject)".to_string()
            } else {
                expected.join(", ")
            },
            verdict,
        );
    }
    if json {
        let out = serde_json::json!({"minScore": min_score, "photos": rows});
        println!("{out}");
        return;
    }
    let n = photos.len().max(1);
    let pct = |k: usize, of: usize| 100.0 * k as f64 / of.max(1) as f64;
    println!();
    println!("MIN_SCORE {min_score}, {} photos:", photos.len());
    println!(
        "- at least one tag (before categories): {tagged} ({:.0}%)",
        pct(tagged, n)
    );
    println!(
        "- at least one tag or category (after): {tagged_or_categorised} ({:.0}%)",
        pct(tagged_or_categorised, n)
    );
    println!(
        "- a right category: {right} ({:.0}%); of the {with_subject} photos whose subject ImageNet has: {right_with_subject} ({:.0}%)",
        pct(right, n),
        pct(right_with_subject, with_subject)
    );
    println!(
        "- a wrong category: {wrong_photos} ({:.0}%){}",
        pct(wrong_photos, n),
        if wrong_given.is_empty() {
            String::new()
        } else {
            format!(": {}", wrong_given.join("; "))
        }
    );
}
