//! The statistics of experiment reports and of the winner rule (DESIGN §3.1): the standard
//! normal distribution, the Wilson score interval of a conversion rate, and the pooled
//! two-proportion z-test, two-sided (report lift) and one-sided (winner rule).
//!
//! Every function is total: an empty sample gives `None`, never NaN, so the JSON a report
//! prints has `null` where nothing can be said.

use serde::{Deserialize, Serialize};

/// The two-sided 95% normal quantile, `Φ⁻¹(0.975)`, as statsmodels uses it for
/// `proportion_confint(..., alpha=0.05)`.
pub const Z_95: f64 = 1.959963984540054;

const SQRT_2: f64 = std::f64::consts::SQRT_2;
/// `1/√π`.
const FRAC_1_SQRT_PI: f64 = 0.5641895835477563;
/// `√(2π)`.
const SQRT_2PI: f64 = 2.5066282746310007;

/// `erfc(x) = 1 - erf(x)`, to about 1e-16 relative, after W. J. Cody, "Rational Chebyshev
/// approximations for the error function", Math. Comp. 23 (1969) 631-638, with the
/// coefficients of his SPECFUN routine CALERF: three near-minimax rational functions, for
/// |x| ≤ 0.46875 (of erf), up to 4 and beyond (of erfc, scaled by `exp(-x²)`, that factor
/// computed in two parts so its rounding error does not grow with x²).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let y = x.abs();
    if y <= 0.46875 {
        const A: [f64; 5] = [
            3.1611237438705655,
            113.86415415105016,
            377.485237685302,
            3209.3775891384694,
            0.18577770618460315,
        ];
        const B: [f64; 4] = [
            23.601290952344122,
            244.02463793444417,
            1282.6165260773723,
            2844.236833439171,
        ];
        let ysq = if y > 1.11e-16 { y * y } else { 0.0 };
        let (mut num, mut den) = (A[4] * ysq, ysq);
        for i in 0..3 {
            num = (num + A[i]) * ysq;
            den = (den + B[i]) * ysq;
        }
        return 1.0 - x * (num + A[3]) / (den + B[3]);
    }
    let scaled = if y <= 4.0 {
        const C: [f64; 9] = [
            0.5641884969886701,
            8.883149794388377,
            66.11919063714163,
            298.6351381974001,
            881.952221241769,
            1712.0476126340707,
            2051.0783778260716,
            1230.3393547979972,
            2.1531153547440383e-08,
        ];
        const D: [f64; 8] = [
            15.744926110709835,
            117.6939508913125,
            537.1811018620099,
            1621.3895745666903,
            3290.7992357334597,
            4362.619090143247,
            3439.3676741437216,
            1230.3393548037493,
        ];
        let (mut num, mut den) = (C[8] * y, y);
        for i in 0..7 {
            num = (num + C[i]) * y;
            den = (den + D[i]) * y;
        }
        (num + C[7]) / (den + D[7])
    } else if y < 26.543 {
        const P: [f64; 6] = [
            0.30532663496123236,
            0.36034489994980445,
            0.12578172611122926,
            0.01608378514874228,
            0.0006587491615298378,
            0.016315387137302097,
        ];
        const Q: [f64; 5] = [
            2.568520192289822,
            1.8729528499234604,
            0.5279051029514285,
            0.06051834131244132,
            0.0023352049762686918,
        ];
        let ysq = 1.0 / (y * y);
        let (mut num, mut den) = (P[5] * ysq, ysq);
        for i in 0..4 {
            num = (num + P[i]) * ysq;
            den = (den + Q[i]) * ysq;
        }
        (FRAC_1_SQRT_PI - ysq * (num + P[4]) / (den + Q[4])) / y
    } else {
        // erfc(26.543) underflows to 0.
        0.0
    };
    let result = if scaled == 0.0 {
        0.0
    } else {
        // exp(-y²) as exp(-r²)·exp(-(y-r)(y+r)) with r = y rounded down to 1/16: r² is exact.
        let r = (y * 16.0).trunc() / 16.0;
        (-r * r).exp() * (-(y - r) * (y + r)).exp() * scaled
    };
    if x < 0.0 { 2.0 - result } else { result }
}

/// `Φ(x)`, the standard normal CDF. Through `erfc` rather than `1 + erf` so the lower tail
/// keeps its relative precision (`Φ(-8)` ≈ 6.2e-16 is not rounded to 0).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / SQRT_2)
}

/// `1 - Φ(x)`, the upper tail, precise where `Φ(x)` is close to 1.
pub fn normal_sf(x: f64) -> f64 {
    0.5 * erfc(x / SQRT_2)
}

/// `Φ⁻¹(p)`, the standard normal quantile, for `0 < p < 1`; `None` outside. Peter J.
/// Acklam's rational approximation (relative error below 1.15e-9), refined by one step of
/// Halley's method on `Φ(x) - p`, which brings it to full double precision.
pub fn normal_quantile(p: f64) -> Option<f64> {
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    // Φ⁻¹(p) = -Φ⁻¹(1 - p), and 1 - p is exact for p ≥ 0.5: the refinement then always
    // works in the lower half, where Φ(x) - p keeps its precision.
    if p > 0.5 {
        return Some(-lower_quantile(1.0 - p));
    }
    Some(lower_quantile(p))
}

/// [`normal_quantile`] for `0 < p ≤ 0.5`.
fn lower_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.357751867269,
        -30.66479806614716,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -54.47609879822406,
        161.5858368580409,
        -155.6989798598866,
        66.80131188771972,
        -13.28068155288572,
    ];
    const C: [f64; 6] = [
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        0.007784695709041462,
        0.3224671290700398,
        2.445134137142996,
        3.754408661907416,
    ];
    let x = if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // Halley: with e = Φ(x) - p and u = e / φ(x), x - u / (1 + x·u/2).
    let e = normal_cdf(x) - p;
    let u = e * SQRT_2PI * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// A confidence interval of a proportion, both ends within [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The lower end.
    pub low: f64,
    /// The upper end.
    pub high: f64,
}

/// The Wilson score interval of `successes` out of `n` at the normal quantile `z` (two-sided:
/// [`Z_95`] for 95%); `None` when `n` is 0 or `successes` exceeds `n`. Unlike the normal
/// approximation, it stays inside [0, 1] and is not empty at 0 or `n` successes.
pub fn wilson(successes: u64, n: u64, z: f64) -> Option<Interval> {
    if n == 0 || successes > n {
        return None;
    }
    let (s, n_f) = (successes as f64, n as f64);
    let p = s / n_f;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denominator;
    let half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denominator;
    // At 0 (or n) successes the exact end is 0 (or 1); rounding would leave a few ulps.
    let low = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if successes == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Some(Interval { low, high })
}

/// [`wilson`] at 95%.
pub fn wilson_95(successes: u64, n: u64) -> Option<Interval> {
    wilson(successes, n, Z_95)
}

/// The pooled two-proportion z statistic of `s1/n1` against `s2/n2`:
/// `(p1 - p2) / √(p(1-p)(1/n1 + 1/n2))` with `p = (s1 + s2) / (n1 + n2)`. `None` when a
/// sample is empty (or has more successes than trials). When the pooled rate is 0 or 1 both
/// rates are equal and nothing separates them: z is 0 (statsmodels answers NaN there).
pub fn pooled_z(s1: u64, n1: u64, s2: u64, n2: u64) -> Option<f64> {
    if n1 == 0 || n2 == 0 || s1 > n1 || s2 > n2 {
        return None;
    }
    let (s1, n1, s2, n2) = (s1 as f64, n1 as f64, s2 as f64, n2 as f64);
    let pooled = (s1 + s2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return Some(0.0);
    }
    Some((s1 / n1 - s2 / n2) / se)
}

/// The two-sided p-value of a z statistic, `2(1 - Φ(|z|))`.
pub fn two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / SQRT_2).min(1.0)
}

/// A pooled two-proportion z-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZTest {
    /// The z statistic (positive when the first rate is higher).
    pub z: f64,
    /// The two-sided p-value.
    pub p_value: f64,
}

/// The two-sided pooled two-proportion z-test of `s1/n1` against `s2/n2`, as
/// `statsmodels.stats.proportion.proportions_ztest([s1, s2], [n1, n2])`; `None` when a
/// sample is empty.
pub fn two_proportion_test(s1: u64, n1: u64, s2: u64, n2: u64) -> Option<ZTest> {
    let z = pooled_z(s1, n1, s2, n2)?;
    Some(ZTest {
        z,
        p_value: two_sided_p(z),
    })
}

/// The winner rule's test (DESIGN §3.1): true when the leader's `s1/n1` beats `s2/n2` by a
/// one-sided pooled two-proportion z-test at `confidence`, that is when
/// z ≥ `Φ⁻¹(confidence)` (0.95 → 1.6449). False when a sample is empty or `confidence` is not
/// strictly between 0 and 1.
pub fn beats(s1: u64, n1: u64, s2: u64, n2: u64, confidence: f64) -> bool {
    match (pooled_z(s1, n1, s2, n2), normal_quantile(confidence)) {
        (Some(z), Some(critical)) => z >= critical,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within `tol`, relative to the expected value's size (absolute below 1).
    #[track_caller]
    fn close(actual: f64, expected: f64, tol: f64) {
        let scale = expected.abs().max(1.0);
        assert!(
            (actual - expected).abs() <= tol * scale,
            "{actual} is not {expected} (±{tol})"
        );
    }

    #[test]
    fn erfc_matches_scipy_in_every_interval() {
        // scipy.special.erfc(x), scipy 1.17.1: relative error within 1e-14, tails included.
        for (x, expected) in [
            (0.2, 0.7772974107895215),
            (-0.3, 1.3286267594591274),
            (0.46875, 0.507386526782062),
            (1.5, 0.03389485352468927),
            (3.9, 3.479224859723178e-08),
            (4.0, 1.541725790028002e-08),
            (5.0, 1.5374597944280347e-12),
            (10.0, 2.0884875837625446e-45),
            (-2.0, 1.9953222650189528),
            (26.0, 5.663192408856145e-296),
            (27.0, 0.0),
        ] {
            let actual = erfc(x);
            assert!(
                (actual - expected).abs() <= 1e-14 * expected,
                "erfc({x}) = {actual}, not {expected}"
            );
        }
        assert_eq!(erfc(-30.0), 2.0);
        assert_eq!(erfc(0.0), 1.0);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn the_quantile_inverts_the_cdf() {
        for i in 1..1000 {
            let p = f64::from(i) / 1000.0;
            let Some(x) = normal_quantile(p) else {
                panic!("no quantile for {p}");
            };
            close(normal_cdf(x), p, 2e-16);
        }
    }

    #[test]
    fn normal_cdf_matches_scipy() {
        // scipy.stats.norm.cdf(x), scipy 1.17.1.
        for (x, expected) in [
            (0.0, 0.5),
            (1.0, 0.8413447460685429),
            (1.959963984540054, 0.975),
            (-1.6448536269514722, 0.050000000000000044),
            (-3.0, 0.0013498980316300933),
            (5.0, 0.9999997133484281),
            (0.3, 0.6179114221889526),
        ] {
            close(normal_cdf(x), expected, 1e-14);
        }
        // The far lower tail keeps its relative precision: scipy.stats.norm.cdf(-8.0).
        let tail = normal_cdf(-8.0);
        assert!((tail - 6.22096057427174e-16).abs() < 1e-13 * 6.22096057427174e-16);
        // norm.sf(5.0) = 1 - norm.cdf(5.0).
        close(normal_sf(5.0), 1.0 - 0.9999997133484281, 1e-14);
    }

    #[test]
    fn normal_quantile_matches_scipy() {
        // scipy.stats.norm.ppf(p), scipy 1.17.1.
        for (p, expected) in [
            (0.5, 0.0),
            (0.95, 1.6448536269514722),
            (0.975, 1.959963984540054),
            (0.999, 3.090232306167813),
            (0.01, -2.3263478740408408),
            (1e-10, -6.361340902404056),
            (0.8, 0.8416212335729143),
        ] {
            let Some(q) = normal_quantile(p) else {
                panic!("no quantile for {p}");
            };
            close(q, expected, 1e-13);
        }
        assert_eq!(normal_quantile(0.0), None);
        assert_eq!(normal_quantile(1.0), None);
        assert_eq!(normal_quantile(f64::NAN), None);
        close(Z_95, 1.959963984540054, 0.0);
    }

    #[test]
    fn wilson_matches_statsmodels() {
        // statsmodels.stats.proportion.proportion_confint(s, n, alpha=0.05, method="wilson"),
        // statsmodels 0.15.0.
        for (s, n, low, high) in [
            (45, 500, 0.06794254788913939, 0.11830941128933345),
            (30, 500, 0.0423483564809462, 0.08436106312521979),
            (7, 13, 0.29143795714506004, 0.7679393219046169),
            (450, 5000, 0.08237915058874333, 0.0982503650062035),
            (1, 1, 0.2065493143772374, 1.0),
            (0, 20, 0.0, 0.1611251580528194),
            // statsmodels gives 0.9999999999999999 for the upper end; the exact end is 1.
            (20, 20, 0.8388748419471804, 1.0),
        ] {
            let Some(i) = wilson_95(s, n) else {
                panic!("no interval for {s}/{n}");
            };
            close(i.low, low, 1e-14);
            close(i.high, high, 1e-14);
        }
    }

    #[test]
    fn wilson_is_none_without_a_sample() {
        assert_eq!(wilson_95(0, 0), None);
        assert_eq!(wilson_95(3, 2), None);
        // Exactly 0 and 1 at the edges, never past them.
        assert_eq!(wilson_95(0, 5).map(|i| i.low), Some(0.0));
        assert_eq!(wilson_95(5, 5).map(|i| i.high), Some(1.0));
    }

    #[test]
    fn two_proportion_test_matches_statsmodels() {
        // statsmodels.stats.proportion.proportions_ztest([s1, s2], [n1, n2]) (pooled,
        // two-sided), statsmodels 0.15.0.
        for (s1, n1, s2, n2, z, p) in [
            (45, 500, 30, 500, 1.8009006755629924, 0.07171853650843411),
            (120, 1000, 100, 1000, 1.4293008498232314, 0.1529177818639462),
            (55, 1000, 40, 1000, 1.5768738975745815, 0.11482454370731801),
            (3, 10, 0, 12, 2.0416711421361615, 0.04118416315538944),
            (10, 100, 10, 100, 0.0, 1.0),
        ] {
            let Some(t) = two_proportion_test(s1, n1, s2, n2) else {
                panic!("no test for {s1}/{n1} against {s2}/{n2}");
            };
            close(t.z, z, 1e-13);
            close(t.p_value, p, 1e-13);
            // Swapped, the sign turns and the p-value stays.
            let Some(swapped) = two_proportion_test(s2, n2, s1, n1) else {
                panic!("no swapped test");
            };
            close(swapped.z, -z, 1e-13);
            close(swapped.p_value, p, 1e-13);
        }
    }

    #[test]
    fn degenerate_samples_give_no_nan() {
        assert_eq!(two_proportion_test(0, 0, 3, 10), None);
        assert_eq!(two_proportion_test(3, 10, 0, 0), None);
        // Nobody (or everybody) converted on either side: equal rates, p = 1 (statsmodels
        // answers NaN for proportions_ztest([0, 0], [50, 50])).
        for (s1, s2) in [(0, 0), (50, 50)] {
            let Some(t) = two_proportion_test(s1, 50, s2, 50) else {
                panic!("no test");
            };
            assert_eq!(
                t,
                ZTest {
                    z: 0.0,
                    p_value: 1.0
                }
            );
        }
    }

    #[test]
    fn the_winner_rule_uses_the_one_sided_quantile() {
        // proportions_ztest([58, 40], [1000, 1000], alternative="larger") gives
        // z = 1.8645292843326882 (p = 0.0311 < 0.05): the leader wins at 0.95, not at 0.99
        // (norm.ppf(0.99) = 2.3263478740408408).
        assert!(beats(58, 1000, 40, 1000, 0.95));
        assert!(!beats(58, 1000, 40, 1000, 0.99));
        // proportions_ztest([55, 40], [1000, 1000], alternative="larger"): z =
        // 1.5768738975745815 (p = 0.0574): not yet.
        assert!(!beats(55, 1000, 40, 1000, 0.95));
        // proportions_ztest([45, 30], [500, 500], alternative="larger"): z =
        // 1.8009006755629924 ≥ 1.6449 although the two-sided p-value is 0.0717.
        assert!(beats(45, 500, 30, 500, 0.95));
        // The loser never beats the leader; equal rates never win.
        assert!(!beats(40, 1000, 58, 1000, 0.95));
        assert!(!beats(10, 100, 10, 100, 0.95));
        assert!(!beats(58, 1000, 40, 0, 0.95));
        assert!(!beats(58, 1000, 40, 1000, 1.0));
    }
}
