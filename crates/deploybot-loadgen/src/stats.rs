//! Latency percentiles.

use std::time::Duration;

#[derive(Default)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn count(&self) -> usize {
        self.micros.len()
    }

    /// "p50 … p99 … max …" in milliseconds.
    pub fn summary(&mut self) -> String {
        if self.micros.is_empty() {
            return "no requests".into();
        }
        self.micros.sort_unstable();
        let at = |q: f64| {
            let i = ((self.micros.len() - 1) as f64 * q).round() as usize;
            f64::from(self.micros[i]) / 1000.0
        };
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            at(0.50),
            at(0.99),
            at(1.0)
        )
    }
}
