//! Classifier labels and the threshold that turns them into tags.

use crate::tagging::categories::{categorise, Category};
pub use crate::wire::record::Label;

/// The labels that become tags: those scoring strictly above `min_score`, best first.
pub fn confident(labels: &[Label], min_score: f64) -> Vec<Label> {
    let mut tags: Vec<Label> = labels
        .iter()
        .filter(|l| l.score > min_score)
        .cloned()
        .collect();
    tags.sort_by(|a, b| b.score.total_cmp(&a.score));
    tags
}

/// What the tagger learned about an image, to build its record from.
#[derive(Clone, Debug, PartialEq)]
pub struct Classified {
    pub labels: Vec<Label>,
    pub model: String,
    pub min_score: f64,
    /// Set when the labels are another image's (same owner, same bytes): no AI call was made.
    pub reused_from: Option<crate::ImageId>,
}

impl Classified {
    /// The tag names: labels strictly above `min_score`, best first.
    pub fn tags(&self) -> Vec<String> {
        confident(&self.labels, self.min_score)
            .into_iter()
            .map(|l| l.label)
            .collect()
    }

    /// The categories scoring strictly above `min_score`, best first.
    pub fn categories(&self) -> Vec<Category> {
        categorise(&self.labels, self.min_score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(label: &str, score: f64) -> Label {
        Label {
            label: label.into(),
            score,
        }
    }

    #[test]
    fn keeps_only_scores_strictly_above_threshold() {
        let labels = [
            l("A", 0.8),
            l("B", 0.81),
            l("C", 0.2),
            l("D", 0.95),
            l("E", 0.8000001),
        ];
        let tags = confident(&labels, 0.8);
        let names: Vec<_> = tags.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(names, ["D", "B", "E"]);
        assert!(confident(&labels, 1.0).is_empty());
        assert_eq!(confident(&labels, 0.0).len(), 5);
        assert!(confident(&[], 0.8).is_empty());
    }

    #[test]
    fn nan_scores_never_pass() {
        assert!(confident(&[l("X", f64::NAN)], 0.0).is_empty());
    }

    #[test]
    fn tags_are_the_confident_label_names_best_first() {
        let c = Classified {
            labels: vec![l("TIGER CAT", 0.81), l("TABBY", 0.9), l("LYNX", 0.8)],
            model: "m".into(),
            min_score: 0.8,
            reused_from: None,
        };
        assert_eq!(c.tags(), ["TABBY", "TIGER CAT"]);
        let cat = c.categories().into_iter().find(|c| c.name == "cat");
        assert_eq!(cat.map(|c| c.score), Some(1.0), "2.51, capped");
    }
}
