//! Categories a person searches for (`cat`, `dog`, `car`, `food`), from the WordNet hierarchy
//! above the model's ImageNet classes.
//!
//! ImageNet's 1000 classes are WordNet noun synsets, so each has a chain of hypernyms
//! (tabby → domestic cat → cat → feline → carnivore → mammal → animal). `selection.tsv` names
//! about 200 levels of those chains that people search for; `table.rs`, generated from WordNet
//! 3.0 by `scripts/gen-categories.py`, gives each label the model can return its categories.
//!
//! A category's score is the sum of the scores of an answer's labels under it: the model's
//! scores are softmax probabilities of disjoint classes, so the sum is the probability that
//! the image shows something of that category. The README's cat (Egyptian cat 0.389, tiger
//! cat 0.326, tabby 0.172) has no label above 0.8, but is a `cat` at 0.887.

pub use crate::wire::record::Category;
use crate::wire::record::Label;

#[rustfmt::skip]
mod table;
#[cfg(test)]
mod tests;

/// Every category name, from the most specific (fewest ImageNet classes) to the most general.
pub fn names() -> impl Iterator<Item = &'static str> {
    table::NAMES.split_terminator('\n')
}

/// Whether `name` (lower case) is a category.
pub fn is_category(name: &str) -> bool {
    names().any(|n| n == name)
}

/// The categories of one label, by its text: any case, surrounding spaces ignored, and only
/// the part before a comma (so `"tabby, tabby cat"` reads as `tabby`). A label the table does
/// not know has none.
pub fn of_label(label: &str) -> impl Iterator<Item = &'static str> {
    let ids: &'static [u8] = set_of(&normalise(label)).unwrap_or(&[]);
    ids.iter().filter_map(|&id| names().nth(usize::from(id)))
}

/// The categories of an answer scoring strictly above `min_score`, best first; ties the more
/// specific first (the order of [`names`]). Each label counts once (a repeated label text is skipped); scores that are not
/// finite or not positive count as zero, and a sum is rounded to six decimals and capped at 1.
pub fn categorise(labels: &[Label], min_score: f64) -> Vec<Category> {
    let mut sums = [0.0f64; table::COUNT];
    let mut seen: Vec<String> = Vec::with_capacity(labels.len());
    for label in labels {
        let key = normalise(&label.label);
        if seen.contains(&key) {
            continue;
        }
        let score = if label.score.is_finite() && label.score > 0.0 {
            label.score
        } else {
            0.0
        };
        for &id in set_of(&key).unwrap_or(&[]) {
            if let Some(sum) = sums.get_mut(usize::from(id)) {
                *sum += score;
            }
        }
        seen.push(key);
    }
    // Few pass (the categories of one answer are mostly one chain). NAMES runs from the
    // most specific category to the most general, and an insertion by score keeps ties in
    // that order; it is also cheaper in the bundle than a generic sort.
    let mut out: Vec<Category> = Vec::new();
    for (&sum, name) in sums.iter().zip(names()) {
        let score = ((sum * 1e6).round() / 1e6).min(1.0);
        if score > min_score {
            let at = out
                .iter()
                .position(|c| c.score < score)
                .unwrap_or(out.len());
            out.insert(
                at,
                Category {
                    name: name.into(),
                    score,
                },
            );
        }
    }
    out
}

/// A label as the table keys it: before any comma, trimmed, ASCII lower case.
fn normalise(label: &str) -> String {
    label
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The category ids of a normalised label.
fn set_of(key: &str) -> Option<&'static [u8]> {
    let at = table::LABELS
        .split_terminator('\n')
        .position(|l| l == key)?;
    let set = usize::from(*table::LABEL_SETS.get(at)?);
    table::SETS.split(|&id| id == u8::MAX).nth(set)
}
