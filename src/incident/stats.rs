//! The detector's one piece of statistics: how surprising a count is under a beta-binomial
//! model (a binomial whose probability is itself uncertain, with a Beta distribution over it
//! learnt from the history). Pure functions; no state.

/// `ln Γ(x)` for `x > 0`.
fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// `ln B(a, b)`, the log of the Beta function.
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln P(X = k)` for `X ~ BetaBinomial(n, a, b)`.
fn ln_pmf(k: u64, n: u64, a: f64, b: f64) -> f64 {
    let (k, n) = (k as f64, n as f64);
    let ln_choose = ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0);
    ln_choose + ln_beta(k + a, n - k + b) - ln_beta(a, b)
}

/// `P(X >= k)` for `X ~ BetaBinomial(n, a, b)`: the chance of seeing at least `k` of `n`
/// tickets in a stream whose share of the volume is Beta(a, b). The first term comes from the
/// log-gamma form, the next ones by the ratio of successive terms, summed until they no longer
/// matter once past the mode. `1` (nothing is surprising) when `k` is 0 or `a`, `b` are not
/// positive finite numbers.
pub fn beta_binomial_tail(k: u64, n: u64, a: f64, b: f64) -> f64 {
    let valid = |x: f64| x.is_finite() && x > 0.0;
    if k == 0 || !valid(a) || !valid(b) {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // Terms relative to the first, rescaled when they grow large (before the mode).
    let mut log_scale = ln_pmf(k, n, a, b);
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for i in k..n {
        let (i, nf) = (i as f64, n as f64);
        let ratio = (nf - i) * (i + a) / ((i + 1.0) * (nf - i - 1.0 + b));
        term *= ratio;
        sum += term;
        if term > 1e200 {
            log_scale += term.ln();
            sum /= term;
            term = 1.0;
        }
        if ratio < 1.0 && term < sum * 1e-16 {
            break;
        }
    }
    (log_scale + sum.ln()).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail by brute force: the binomial mixed over the Beta density, numerically.
    fn tail_by_integration(k: u64, n: u64, a: f64, b: f64) -> f64 {
        let steps = 200_000;
        let mut num = 0.0;
        let mut den = 0.0;
        for s in 1..steps {
            let p = s as f64 / steps as f64;
            let w = p.powf(a - 1.0) * (1.0 - p).powf(b - 1.0);
            let mut tail = 0.0;
            for i in k..=n {
                let c = (ln_gamma(n as f64 + 1.0)
                    - ln_gamma(i as f64 + 1.0)
                    - ln_gamma((n - i) as f64 + 1.0))
                .exp();
                tail += c * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32);
            }
            num += w * tail;
            den += w;
        }
        num / den
    }

    #[test]
    fn tail_matches_the_mixture_it_stands_for() {
        for &(k, n, a, b) in &[
            (0, 5, 1.0, 1.0),
            (3, 10, 2.0, 30.0),
            (6, 12, 1.5, 20.0),
            (1, 1, 3.0, 7.0),
            (9, 40, 5.0, 80.0),
        ] {
            let want = tail_by_integration(k, n, a, b);
            let got = beta_binomial_tail(k, n, a, b);
            assert!(
                (got - want).abs() <= 1e-3 * want.max(1e-9),
                "P(X >= {k} | {n}, {a}, {b}) = {got}, by integration {want}"
            );
        }
    }

    #[test]
    fn tail_of_a_uniform_share_is_uniform_over_counts() {
        // BetaBinomial(n, 1, 1) puts 1/(n+1) on each count.
        for k in 0..=10 {
            let got = beta_binomial_tail(k, 10, 1.0, 1.0);
            assert!((got - (11 - k) as f64 / 11.0).abs() < 1e-9, "k={k}: {got}");
        }
        assert_eq!(beta_binomial_tail(11, 10, 1.0, 1.0), 0.0);
    }

    #[test]
    fn small_and_u_shaped_betas_and_long_tails() {
        // a, b below 1 (a Beta piled at 0 and 1), and a tail far past the mode: the sum by
        // recurrence and early stop against every term from the log-gamma form.
        for &(k, n, a, b) in &[(3, 20, 0.3, 0.7), (1, 8, 0.05, 0.5), (12, 400, 0.8, 30.0)] {
            let want: f64 = (k..=n).map(|i| ln_pmf(i, n, a, b).exp()).sum();
            let got = beta_binomial_tail(k, n, a, b);
            assert!(
                (got - want).abs() <= 1e-9 * want.max(1e-12),
                "P(X >= {k} | {n}, {a}, {b}) = {got}, term by term {want}"
            );
        }
        // The whole distribution sums to one, however many terms.
        let all = beta_binomial_tail(1, 100_000, 5.0, 95.0) + (ln_pmf(0, 100_000, 5.0, 95.0)).exp();
        assert!((all - 1.0).abs() < 1e-9, "{all}");
        // Invalid parameters make nothing surprising.
        assert_eq!(beta_binomial_tail(3, 10, f64::NAN, 1.0), 1.0);
        assert_eq!(beta_binomial_tail(3, 10, 0.0, 1.0), 1.0);
    }

    #[test]
    fn a_sure_share_is_the_binomial() {
        // A Beta with huge weight at p = 0.1 is the binomial: P(X >= 2 | 5, 0.1) = 0.08146.
        let got = beta_binomial_tail(2, 5, 1e7, 9e7);
        assert!((got - 0.08146).abs() < 1e-4, "{got}");
    }
}
