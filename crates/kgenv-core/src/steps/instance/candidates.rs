//! Where the VM may go: every (GPU choice, zone) the preflight found offered, in the order
//! `up` tries them.
//!
//! The order is the user's: GPU choices in the order written; within one choice, zones in
//! the order written. Where the user did not order zones — `zones = "auto"`, or the zones
//! a region stands for — the cheaper zone goes first, then by name (so the order is the
//! same on every run). Prices come from outside ([`order`] takes a price source): a zone
//! without a known price goes after those with one.

use std::cmp::Ordering;

use crate::spec::GpuChoice;

/// One place the VM may be made: a GPU choice in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index of the choice in the spec's GPU list (0: the first).
    pub choice: usize,
    /// The machine type, GPU type and count.
    pub gpu: GpuChoice,
    /// The zone.
    pub zone: String,
    /// Index of the `zones` entry the zone came from (a zone, or the region it is in; 0
    /// for `"auto"`): zones of one entry are ordered by price, entries as written.
    pub entry: usize,
}

impl Candidate {
    /// `us-central1-a`, or with several GPU choices `us-central1-a 1x nvidia-l4 on
    /// g2-standard-8`: how the candidate shows in logs and errors.
    pub fn label(&self, several_choices: bool) -> String {
        if several_choices {
            format!("{} {}", self.zone, self.gpu.describe())
        } else {
            self.zone.clone()
        }
    }
}

/// `candidates` in the order `up` tries them: by GPU choice, then by `zones` entry, then
/// by `price` (per hour; `None`, unknown, after every known price), then by zone name.
pub fn order(
    mut candidates: Vec<Candidate>,
    price: impl Fn(&Candidate) -> Option<f64>,
) -> Vec<Candidate> {
    let by_price = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    candidates.sort_by(|a, b| {
        a.choice
            .cmp(&b.choice)
            .then(a.entry.cmp(&b.entry))
            .then_with(|| by_price(price(a), price(b)))
            .then_with(|| a.zone.cmp(&b.zone))
    });
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(t: &str, m: &str) -> GpuChoice {
        GpuChoice {
            gpu_type: Some(t.into()),
            machine_type: m.into(),
            count: 1,
        }
    }

    fn c(choice: usize, entry: usize, zone: &str) -> Candidate {
        let g = if choice == 0 {
            gpu("nvidia-l4", "g2-standard-8")
        } else {
            gpu("nvidia-tesla-t4", "n1-standard-8")
        };
        Candidate {
            choice,
            gpu: g,
            zone: zone.into(),
            entry,
        }
    }

    fn zones(v: &[Candidate]) -> Vec<(usize, &str)> {
        v.iter().map(|c| (c.choice, c.zone.as_str())).collect()
    }

    #[test]
    fn gpu_order_first_then_zones_as_written() {
        let given = vec![
            c(1, 0, "us-central1-b"),
            c(0, 1, "europe-west4-a"),
            c(1, 1, "europe-west4-a"),
            c(0, 0, "us-central1-b"),
        ];
        // Prices never reorder zones the user ordered.
        let out = order(given, |c| {
            Some(if c.zone.starts_with("us") { 9.0 } else { 1.0 })
        });
        assert_eq!(
            zones(&out),
            [
                (0, "us-central1-b"),
                (0, "europe-west4-a"),
                (1, "us-central1-b"),
                (1, "europe-west4-a")
            ]
        );
    }

    #[test]
    fn zones_of_one_entry_go_by_price_then_name_unknown_last() {
        let given = vec![
            c(0, 0, "us-central1-c"),
            c(0, 0, "us-central1-a"),
            c(0, 0, "europe-west4-b"),
            c(0, 0, "asia-east1-a"),
            c(0, 0, "us-west1-b"),
        ];
        let price = |c: &Candidate| match c.zone.as_str() {
            "us-central1-c" | "us-central1-a" => Some(0.7),
            "europe-west4-b" => Some(0.5),
            _ => None,
        };
        let out = order(given.clone(), price);
        assert_eq!(
            zones(&out),
            [
                (0, "europe-west4-b"),
                (0, "us-central1-a"),
                (0, "us-central1-c"),
                (0, "asia-east1-a"),
                (0, "us-west1-b")
            ]
        );
        // No prices at all: by name, the same on every run.
        let out = order(given, |_| None);
        assert_eq!(
            zones(&out),
            [
                (0, "asia-east1-a"),
                (0, "europe-west4-b"),
                (0, "us-central1-a"),
                (0, "us-central1-c"),
                (0, "us-west1-b")
            ]
        );
    }

    #[test]
    fn labels_name_the_choice_only_when_there_are_several() {
        let x = c(0, 0, "us-central1-a");
        assert_eq!(x.label(false), "us-central1-a");
        assert_eq!(x.label(true), "us-central1-a 1x nvidia-l4 on g2-standard-8");
    }
}
