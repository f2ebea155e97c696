//! Money arithmetic of leases, in the escrow's units (micro-USDC): when a lease's funds run out.
//! Pure functions, so the store, the lifecycle and the tests share one definition of what the
//! contract computes.

/// The second at which a lease's accrual reaches its funding: the escrow accrues
/// `accrued_before + floor(rate * (t - accrual_start) / 3600)`, so that is the smallest `t` with
/// `rate * (t - accrual_start) >= (funded - accrued_before) * 3600`.
pub fn depleted_at(
    funded: i64,
    accrual_start: i64,
    accrued_before: i64,
    rate_per_hour: i64,
) -> i64 {
    let remaining = i128::from(funded) - i128::from(accrued_before);
    if remaining <= 0 || rate_per_hour <= 0 {
        // Nothing left, or nothing ever accrues (a free lease never runs out).
        return if remaining <= 0 {
            accrual_start
        } else {
            i64::MAX
        };
    }
    let rate = i128::from(rate_per_hour);
    // Rounded up: the VM keeps running through the last second that is still paid for.
    let secs = (remaining * 3600 + rate - 1) / rate;
    i64::try_from(i128::from(accrual_start) + secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::depleted_at;

    #[test]
    fn funds_run_out_when_accrual_reaches_funding() {
        // 3600 per hour is 1 per second: 10 funded lasts 10 s.
        assert_eq!(depleted_at(10, 1_000, 0, 3_600), 1_010);
        // Rounded up: 1 unit at 7200/h accrues at 0.5 s, so the lease runs out at its first whole second.
        assert_eq!(depleted_at(1, 0, 0, 7_200), 1);
        assert_eq!(depleted_at(1, 0, 0, 1_000), 4);
        // After a top-up the segment restarts: what accrued before is already spent.
        assert_eq!(depleted_at(100, 500, 90, 3_600), 510);
        assert_eq!(depleted_at(90, 500, 90, 3_600), 500);
        assert_eq!(depleted_at(10, 0, 0, 0), i64::MAX);
    }
}
