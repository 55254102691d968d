//! Experiment assignment (DESIGN §3.1): the deterministic SHA-256 bucket that places a
//! contact on a `split` path, picks a send step's message variant, or holds it out (the
//! scenario's holdout), identical in every mode.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Buckets per contact: one per basis point (percent × 100).
pub const BUCKETS: u64 = 10_000;

/// The step name the scenario holdout hashes with.
pub const HOLDOUT_STEP: &str = "holdout";

/// The end of a held-out enrollment, as journaled and counted.
pub const HELD_OUT_END: &str = "held_out";

/// `u64::from_be_bytes(first 8 bytes of SHA-256("{scenario}:{step}:{contact}")) % 10000`.
pub fn bucket(scenario: &str, step: &str, contact: &str) -> u16 {
    let digest = Sha256::digest(format!("{scenario}:{step}:{contact}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Below 10,000, so it fits.
    (u64::from_be_bytes(first) % BUCKETS) as u16
}

/// The global control group's bucket: `SHA-256("holdout:{seed}:{contact}")`, read as
/// [`bucket`] reads its digest.
pub fn global_bucket(seed: &str, contact: &str) -> u16 {
    bucket("holdout", seed, contact)
}

/// The index of the path whose range of basis points holds `bucket`: paths in list order own
/// consecutive ranges. `None` only when the shares do not reach the bucket (an unvalidated
/// scenario whose percents sum below 100).
pub fn pick(shares: impl IntoIterator<Item = u32>, bucket: u16) -> Option<usize> {
    let mut upper = 0u32;
    for (i, share) in shares.into_iter().enumerate() {
        upper = upper.saturating_add(share);
        if u32::from(bucket) < upper {
            return Some(i);
        }
    }
    None
}

/// A percent with at most two decimals, in basis points (`12.5` → 1250); the error says why
/// not, for the caller to locate.
pub fn basis_points(v: &Value) -> Result<u32, String> {
    let Some(p) = v.as_f64() else {
        return Err(format!(
            "a percent is a number such as 50 or 33.33, not {v}"
        ));
    };
    let scaled = p * 100.0;
    let bp = scaled.round();
    if (scaled - bp).abs() > 1e-6 {
        return Err(format!("{p} has more than 2 decimals"));
    }
    if !(0.0..=10_000.0).contains(&bp) {
        return Err(format!("{p} is not between 0 and 100"));
    }
    // In 0..=10,000 and whole, so it fits.
    Ok(bp as u32)
}

/// Basis points written as a percent (`1250` → `12.5`).
pub fn percent_text(bp: u32) -> String {
    let (whole, frac) = (bp / 100, bp % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The formula written out again, apart from [`bucket`].
    fn by_formula(s: &str) -> u16 {
        let d = Sha256::digest(s.as_bytes());
        let n = d[..8]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        (n % 10_000) as u16
    }

    #[test]
    fn bucket_follows_the_formula() {
        assert_eq!(bucket("welcome", "ab", "c-1"), by_formula("welcome:ab:c-1"));
        // Computed apart with Python: int.from_bytes(sha256(b"welcome:ab:c-1").digest()[:8],
        // "big") % 10000.
        assert_eq!(bucket("welcome", "ab", "c-1"), 5206);
        assert_eq!(bucket("welcome", HOLDOUT_STEP, "c-1"), 6510);
    }

    #[test]
    fn paths_own_consecutive_ranges() {
        let shares = [5000, 2500, 2500];
        assert_eq!(pick(shares, 0), Some(0));
        assert_eq!(pick(shares, 4999), Some(0));
        assert_eq!(pick(shares, 5000), Some(1));
        assert_eq!(pick(shares, 7499), Some(1));
        assert_eq!(pick(shares, 7500), Some(2));
        assert_eq!(pick(shares, 9999), Some(2));
        assert_eq!(pick([5000, 4950], 9960), None);
    }

    #[test]
    fn percents_read_in_basis_points() {
        assert_eq!(basis_points(&serde_json::json!(50)), Ok(5000));
        assert_eq!(basis_points(&serde_json::json!(33.33)), Ok(3333));
        assert_eq!(basis_points(&serde_json::json!(0.01)), Ok(1));
        assert!(basis_points(&serde_json::json!(33.333)).is_err());
        assert!(basis_points(&serde_json::json!(101)).is_err());
        assert!(basis_points(&serde_json::json!("50")).is_err());
        assert_eq!(percent_text(1250), "12.5");
        assert_eq!(percent_text(3333), "33.33");
        assert_eq!(percent_text(5000), "50");
        assert_eq!(percent_text(5), "0.05");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// 10,000 generated contacts split within ±2 points of the percents, the same way
        /// on a second run.
        #[test]
        fn splits_match_their_percents(first in 1u32..99, seed in any::<u32>()) {
            let shares = [first * 100, (100 - first) * 100];
            let ids: Vec<String> = (0..10_000).map(|i| format!("c-{seed}-{i}")).collect();
            let assign = || -> Vec<usize> {
                ids.iter()
                    .map(|id| pick(shares, bucket("exp", "ab", id)).unwrap_or(usize::MAX))
                    .collect()
            };
            let once = assign();
            prop_assert_eq!(&once, &assign());
            let on_first = once.iter().filter(|&&p| p == 0).count() as f64 / 100.0;
            prop_assert!((on_first - f64::from(first)).abs() <= 2.0, "{on_first} vs {first}");
            prop_assert!(once.iter().all(|&p| p < 2));
        }
    }
}
