//! `relance report`: the experiment report of a scenario (DESIGN §3.1), as a table or JSON.

use std::process::ExitCode;

use anyhow::Result;
use relance_core::report::{Conversions, HoldoutComparison, Report};

use crate::backend::{Backend, on_backend, print_json};

/// `relance report`.
pub fn report(backend: &Backend, scenario: &str, json: bool) -> Result<ExitCode> {
    let report = on_backend!(backend, |rt| rt.report(scenario)?);
    if json {
        print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A rate as a percent with two decimals; `-` without entries.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0))
}

/// The rate's 95% interval, `[low, high]` in percent; `-` without entries.
fn interval(c: &Conversions) -> String {
    c.interval.map_or_else(
        || "-".into(),
        |i| format!("[{:.2}%, {:.2}%]", i.low * 100.0, i.high * 100.0),
    )
}

/// `entries, converted, rate [interval], revenue` on one line.
fn summary(c: &Conversions) -> String {
    format!(
        "{} entries, {} converted, {} {}, revenue {:.2}",
        c.entries,
        c.converted,
        percent(c.rate),
        interval(c),
        c.revenue
    )
}

fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "p < 0.0001".into()
    } else {
        format!("p = {p:.4}")
    }
}

fn lift_line(h: &HoldoutComparison) -> String {
    let Some(absolute) = h.lift.absolute else {
        return "lift: none yet (a group has no entries)".into();
    };
    let relative = h.lift.relative.map_or_else(
        || "relative: none (no held-out conversion)".into(),
        |r| format!("{:+.1}% relative", r * 100.0),
    );
    let test = match (h.lift.z, h.lift.p_value) {
        (Some(z), Some(p)) => format!("{} (two-sided z-test, z = {z:.2})", p_value(p)),
        _ => String::new(),
    };
    format!("lift: {:+.2} pp, {relative}, {test}", absolute * 100.0)
}

/// One table row: the label, the counts, the conversions.
fn row(
    label: &str,
    entered: Option<u64>,
    [sent, delivered, opened, clicked]: [u64; 4],
    c: &Conversions,
) -> Result<()> {
    let entered = entered.map_or_else(String::new, |n| n.to_string());
    outln!(
        "  {label:<26} {entered:>8} {sent:>8} {delivered:>9} {opened:>8} {clicked:>8} {:>8} {:>9} {:>8} {:>18} {:>10.2}",
        c.entries,
        c.converted,
        percent(c.rate),
        interval(c),
        c.revenue
    );
    Ok(())
}

/// The report as a table: the totals, the holdout with the lift, then one row per step and,
/// under a split or a variant send, one per path or variant.
pub fn print_report(r: &Report) -> Result<()> {
    outln!("{}: {}", r.scenario, summary(&r.total));
    if let Some(h) = &r.holdout {
        outln!("  treated:  {}", summary(&h.treated));
        outln!("  held out: {}", summary(&h.held_out));
        outln!("  {}", lift_line(h));
    }
    if let Some(g) = &r.global_holdout {
        outln!(
            "  program (outside the global control group): {}",
            summary(&g.treated)
        );
        outln!("  global control group: {}", summary(&g.held_out));
        outln!("  {}", lift_line(g));
    }
    outln!(
        "  {:<26} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>18} {:>10}",
        "step / path / variant",
        "entered",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "entries",
        "converted",
        "rate",
        "95% interval",
        "revenue"
    );
    for s in &r.steps {
        row(
            &s.step,
            Some(s.entered),
            [s.sent, s.delivered, s.opened, s.clicked],
            &s.conversions,
        )?;
        for p in &s.paths {
            row(
                &format!("  → {}", p.path),
                None,
                [p.sent, p.delivered, p.opened, p.clicked],
                &p.conversions,
            )?;
        }
        for v in &s.variants {
            let label = if v.winner {
                format!("  ◆ {} (winner)", v.message)
            } else {
                format!("  ◆ {}", v.message)
            };
            row(
                &label,
                None,
                [v.sent, v.delivered, v.opened, v.clicked],
                &v.conversions,
            )?;
        }
    }
    outln!(
        "  entries: the rate's denominator (entries reaching the step, assigned the path or the \
         variant); 95% interval: Wilson score"
    );
    Ok(())
}
