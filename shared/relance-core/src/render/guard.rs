//! A static check of a message template before it may run: what minijinja allocates in one
//! instruction (a `~`, a string `*`, a filter over a list) cannot be stopped by fuel or by
//! the output cap, so templates whose values could grow without bound are refused here.
//!
//! The check gives every expression an upper bound on its size: `weight` contact-sized values
//! (a contact field, a loop item, a capped filter's output) plus `fixed` bytes written in the
//! template. `~`, `+` and list literals add up, `*` repeats only by a whole number written in
//! the template, an assignment carries its bound to the variable, and a loop body is walked
//! again until the bounds stop growing (a value that grows on each turn is refused). A value
//! then never exceeds `MAX_WEIGHT` contact values plus `MAX_FIXED` bytes, however much fuel
//! is spent building it. Macros, includes, imports and capture blocks are not available in
//! messages (a macro calling itself would compound its arguments).

use std::collections::{BTreeMap, BTreeSet};

use minijinja::machinery::ast::{BinOpKind, CallArg, CallType, Expr, Stmt};
use minijinja::machinery::{WhitespaceConfig, parse, parse_expr};
use minijinja::syntax::SyntaxConfig;

/// The most contact-sized values one expression may combine.
pub(crate) const MAX_WEIGHT: u64 = 16;
/// The most bytes written in the template one expression may repeat into a value.
pub(crate) const MAX_FIXED: u64 = 256 * 1024;
/// The most nodes the check visits in one template (loop bodies are walked up to three
/// times each, so nested loops multiply).
const MAX_VISITS: u64 = 1_000_000;
/// The largest repeat count of `value * n` when `value` may be text or a list.
pub(crate) const MAX_REPEAT: i64 = 100;

/// Filters a message may use, by how their output relates to their input.
const NUMERIC_FILTERS: &[&str] = &[
    "int",
    "float",
    "round",
    "abs",
    "length",
    "count",
    "wordcount",
    "bool",
    "sum",
];
/// Case mappings can turn one character into three bytes more.
const CASE_FILTERS: &[&str] = &["upper", "lower", "title", "capitalize"];
/// HTML escaping writes at most six bytes for one.
const ESCAPE_FILTERS: &[&str] = &["escape", "e"];
/// Output no bigger than input and arguments together.
const SAME_FILTERS: &[&str] = &[
    "default",
    "d",
    "trim",
    "safe",
    "first",
    "last",
    "min",
    "max",
    "reverse",
    "sort",
    "unique",
    "list",
    "lines",
    "split",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "map",
    "attr",
    "truncate",
];
/// Pairs and lists of pairs: their text form quotes every item again.
const NESTING_FILTERS: &[&str] = &["items", "dictsort"];
/// Checked at run time against [`super::FILTER_CAP`] (see `render.rs`).
const CAPPED_FILTERS: &[&str] = &["join", "replace"];

/// True when a message may use filter `name`.
pub(crate) fn filter_allowed(name: &str) -> bool {
    [
        NUMERIC_FILTERS,
        CASE_FILTERS,
        ESCAPE_FILTERS,
        SAME_FILTERS,
        NESTING_FILTERS,
        CAPPED_FILTERS,
    ]
    .iter()
    .any(|set| set.contains(&name))
}

fn allowed_list() -> String {
    let mut all: Vec<&str> = [
        NUMERIC_FILTERS,
        CASE_FILTERS,
        ESCAPE_FILTERS,
        SAME_FILTERS,
        NESTING_FILTERS,
        CAPPED_FILTERS,
    ]
    .concat();
    all.sort_unstable();
    all.join(", ")
}

/// The upper bound of one value's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Size {
    /// How many contact-sized values it may hold.
    weight: u64,
    /// How many bytes written in the template it may hold.
    fixed: u64,
    /// A number (or a boolean) for sure: it cannot be repeated or concatenated into text.
    numeric: bool,
}

impl Size {
    const NUMBER: Size = Size {
        weight: 0,
        fixed: 0,
        numeric: true,
    };
    const ONE: Size = Size {
        weight: 1,
        fixed: 0,
        numeric: false,
    };

    fn plus(self, other: Size) -> Size {
        Size {
            weight: self.weight.saturating_add(other.weight),
            fixed: self.fixed.saturating_add(other.fixed),
            numeric: false,
        }
    }

    fn times(self, n: u64) -> Size {
        Size {
            weight: self.weight.saturating_mul(n),
            fixed: self.fixed.saturating_mul(n),
            numeric: false,
        }
    }

    fn max(self, other: Size) -> Size {
        Size {
            weight: self.weight.max(other.weight),
            fixed: self.fixed.max(other.fixed),
            numeric: self.numeric && other.numeric,
        }
    }
}

/// What a template reads: the contact fields it names (for a sample contact).
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// `contact.<name>` fields, first level.
    pub fields: BTreeSet<String>,
}

/// Checks a template; `Ok(None)` when it does not parse (the caller reports syntax errors).
// `SyntaxConfig` is a unit struct unless minijinja's `custom_syntax` feature is on.
#[allow(clippy::default_constructed_unit_structs)]
pub(crate) fn check_template(source: &str) -> Result<Option<Reads>, String> {
    let Ok(ast) = parse(
        source,
        "message",
        SyntaxConfig::default(),
        WhitespaceConfig::default(),
    ) else {
        return Ok(None);
    };
    let mut w = Walker::default();
    w.stmt(&ast)?;
    Ok(Some(w.reads))
}

/// Checks an expression (`update_profile`); `Ok(None)` when it does not parse.
pub(crate) fn check_expression(source: &str) -> Result<Option<Reads>, String> {
    let Ok(ast) = parse_expr(source) else {
        return Ok(None);
    };
    let mut w = Walker::default();
    w.expr(&ast)?;
    Ok(Some(w.reads))
}

#[derive(Default)]
struct Walker {
    /// The bound of each assigned variable (the largest over its assignments).
    vars: BTreeMap<String, Size>,
    reads: Reads,
    /// True while walking a loop body again: the bounds of its variables must not grow.
    changed: bool,
    /// Nodes visited so far.
    visits: u64,
}

impl Walker {
    fn stmts(&mut self, body: &[Stmt<'_>]) -> Result<(), String> {
        body.iter().try_for_each(|s| self.stmt(s))
    }

    fn stmt(&mut self, s: &Stmt<'_>) -> Result<(), String> {
        self.tick()?;
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr).map(|_| ()),
            Stmt::EmitRaw(_) => Ok(()),
            Stmt::IfCond(c) => {
                self.expr(&c.expr)?;
                self.stmts(&c.true_body)?;
                self.stmts(&c.false_body)
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled)?;
                self.stmts(&a.body)
            }
            Stmt::Set(set) => {
                let size = self.expr(&set.expr)?;
                self.assign(&set.target, size)
            }
            Stmt::WithBlock(w) => {
                for (target, value) in &w.assignments {
                    let size = self.expr(value)?;
                    self.assign(target, size)?;
                }
                self.stmts(&w.body)
            }
            Stmt::ForLoop(f) => {
                if f.recursive {
                    return Err("recursive loops are not available in messages".into());
                }
                let iter = self.expr(&f.iter)?;
                // An item is never bigger than its list; a `range` gives numbers.
                let item = if iter.numeric || is_range(&f.iter) {
                    Size::NUMBER
                } else {
                    Size {
                        numeric: false,
                        ..iter
                    }
                };
                self.assign(&f.target, item)?;
                if let Some(filter) = &f.filter_expr {
                    self.expr(filter)?;
                }
                // Walk the body until the variables' bounds stop growing: a `set` inside the
                // loop may feed the next turn. An enclosing loop must still see a change.
                let outer_changed = self.changed;
                for pass in 0..3 {
                    self.changed = false;
                    self.stmts(&f.body)?;
                    if !self.changed {
                        self.changed = outer_changed || pass > 0;
                        return self.stmts(&f.else_body);
                    }
                }
                Err(
                    "a value set in this loop grows on each turn (a `set` that adds to itself); \
                     numbers may (`|int`, `|float`), text and lists may not"
                        .into(),
                )
            }
            Stmt::SetBlock(_) => {
                Err("`{% set %}…{% endset %}` blocks are not available in messages".into())
            }
            Stmt::FilterBlock(_) => {
                Err("`{% filter %}` blocks are not available in messages".into())
            }
            Stmt::Macro(_) | Stmt::CallBlock(_) => {
                Err("macros are not available in messages".into())
            }
            Stmt::Include(_) | Stmt::Import(_) | Stmt::FromImport(_) | Stmt::Extends(_) => {
                Err("a message cannot include, import or extend another template".into())
            }
            Stmt::Block(_) => Err("`{% block %}` is not available in messages".into()),
            Stmt::Do(_) => Err("`{% do %}` is not available in messages".into()),
            #[allow(unreachable_patterns)]
            _ => Err("this statement is not available in messages".into()),
        }
    }

    fn assign(&mut self, target: &Expr<'_>, size: Size) -> Result<(), String> {
        match target {
            Expr::Var(v) => {
                let entry = self.vars.entry(v.id.to_string()).or_insert(Size::NUMBER);
                let merged = entry.max(size);
                if merged != *entry {
                    *entry = merged;
                    self.changed = true;
                }
                Ok(())
            }
            Expr::List(l) => l.items.iter().try_for_each(|t| self.assign(t, size)),
            _ => Err("only plain names can be assigned in messages".into()),
        }
    }

    fn args(&mut self, args: &[CallArg<'_>]) -> Result<Size, String> {
        let mut total = Size::NUMBER;
        for a in args {
            let e = match a {
                CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) => e,
                CallArg::KwargSplat(e) => e,
            };
            total = total.plus(self.expr(e)?);
        }
        Ok(Size {
            numeric: args.is_empty(),
            ..total
        })
    }

    /// Counts a visit: nested loops are walked more than once, and the check itself must
    /// stay bounded.
    fn tick(&mut self) -> Result<(), String> {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(format!(
                "template too complex to check (more than {MAX_VISITS} steps); nest fewer loops"
            ));
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr<'_>) -> Result<Size, String> {
        self.tick()?;
        let size = self.expr_inner(e)?;
        if size.weight > MAX_WEIGHT {
            return Err(format!(
                "an expression here may combine more than {MAX_WEIGHT} contact values \
                 (through `~`, `+`, `*`, lists or filters); build the text where it is written \
                 out instead"
            ));
        }
        if size.fixed > MAX_FIXED {
            return Err(format!(
                "an expression here may build more than {MAX_FIXED} bytes of text"
            ));
        }
        Ok(size)
    }

    fn expr_inner(&mut self, e: &Expr<'_>) -> Result<Size, String> {
        Ok(match e {
            Expr::Const(c) => match c.value.as_str() {
                Some(s) => Size {
                    weight: 0,
                    fixed: s.len() as u64,
                    numeric: false,
                },
                None if c.value.is_number() || c.value.is_none() || c.value.is_undefined() => {
                    Size::NUMBER
                }
                // A folded constant list or map: as big as its text in the template.
                None => Size {
                    weight: 0,
                    fixed: c.value.to_string().len() as u64,
                    numeric: false,
                },
            },
            Expr::Var(v) => self.vars.get(v.id).copied().unwrap_or(Size::ONE),
            Expr::GetAttr(a) => {
                if let Expr::Var(v) = &a.expr
                    && v.id == "contact"
                {
                    self.reads.fields.insert(a.name.to_string());
                }
                // A part of a value is no bigger than the value.
                self.expr(&a.expr)?
            }
            Expr::GetItem(g) => {
                self.expr(&g.subscript_expr)?;
                let inner = self.expr(&g.expr)?;
                Size {
                    numeric: false,
                    ..inner
                }
            }
            Expr::Slice(s) => {
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part)?;
                }
                self.expr(&s.expr)?
            }
            Expr::UnaryOp(u) => {
                self.expr(&u.expr)?;
                Size::NUMBER
            }
            Expr::Compare(c) => {
                self.expr(&c.expr)?;
                for op in &c.ops {
                    self.expr(&op.expr)?;
                }
                Size::NUMBER
            }
            Expr::Test(t) => {
                self.expr(&t.expr)?;
                self.args(&t.args)?;
                Size::NUMBER
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr)?;
                let yes = self.expr(&i.true_expr)?;
                match &i.false_expr {
                    Some(no) => yes.max(self.expr(no)?),
                    None => yes,
                }
            }
            Expr::List(l) => {
                let mut total = Size::NUMBER;
                for item in &l.items {
                    total = total.plus(self.expr(item)?);
                }
                // Written out, a list quotes its items again.
                total.times(2)
            }
            Expr::Map(m) => {
                let mut total = Size::NUMBER;
                for item in m.keys.iter().chain(&m.values) {
                    total = total.plus(self.expr(item)?);
                }
                total.times(2)
            }
            Expr::BinOp(b) => self.binop(b.op, &b.left, &b.right)?,
            Expr::Filter(f) => {
                let input = match &f.expr {
                    Some(e) => self.expr(e)?,
                    None => Size::NUMBER,
                };
                if !filter_allowed(f.name) {
                    return Err(format!(
                        "filter `{}` is not available in messages (available: {})",
                        f.name,
                        allowed_list()
                    ));
                }
                if matches!(f.name, "map" | "select" | "reject")
                    && let Some(CallArg::Pos(first)) = f.args.first()
                {
                    // `map("name", ...)` applies a filter by name: only the same ones.
                    match first {
                        Expr::Const(c) if c.value.as_str().is_some_and(filter_allowed) => {}
                        Expr::Const(_) if f.name != "map" => {}
                        _ => {
                            return Err(format!(
                                "`{}` must name one of the available filters or tests, \
                                 written in the template",
                                f.name
                            ));
                        }
                    }
                }
                let args = self.args(&f.args)?;
                if NUMERIC_FILTERS.contains(&f.name) {
                    Size::NUMBER
                } else if CASE_FILTERS.contains(&f.name) {
                    input.times(3)
                } else if ESCAPE_FILTERS.contains(&f.name) {
                    input.times(6)
                } else if NESTING_FILTERS.contains(&f.name) {
                    input.times(2)
                } else if CAPPED_FILTERS.contains(&f.name) {
                    // At most `FILTER_CAP` or the input's size, checked when it runs.
                    input.max(Size::ONE)
                } else {
                    input.plus(args)
                }
            }
            Expr::Call(c) => {
                let args = self.args(&c.args)?;
                match c.identify_call() {
                    CallType::Function("range") => Size::ONE,
                    CallType::Function("dict") => args.times(2),
                    CallType::Method(Expr::Var(v), "cycle" | "changed") if v.id == "loop" => Size {
                        numeric: false,
                        ..args
                    },
                    CallType::Function(name) => {
                        return Err(format!(
                            "function `{name}` is not available in messages (range and dict are)"
                        ));
                    }
                    _ => {
                        return Err("only range(), dict(), loop.cycle() and loop.changed() \
                                    can be called in messages"
                            .into());
                    }
                }
            }
        })
    }

    fn binop(&mut self, op: BinOpKind, left: &Expr<'_>, right: &Expr<'_>) -> Result<Size, String> {
        let l = self.expr(left)?;
        let r = self.expr(right)?;
        Ok(match op {
            BinOpKind::Eq
            | BinOpKind::Ne
            | BinOpKind::Lt
            | BinOpKind::Lte
            | BinOpKind::Gt
            | BinOpKind::Gte
            | BinOpKind::In
            | BinOpKind::Sub
            | BinOpKind::Div
            | BinOpKind::FloorDiv
            | BinOpKind::Rem
            | BinOpKind::Pow => Size::NUMBER,
            BinOpKind::ScAnd | BinOpKind::ScOr => l.max(r),
            BinOpKind::Add if l.numeric && r.numeric => Size::NUMBER,
            BinOpKind::Add | BinOpKind::Concat => l.plus(r),
            BinOpKind::Mul => {
                if l.numeric && r.numeric {
                    return Ok(Size::NUMBER);
                }
                match (int_const(left), int_const(right)) {
                    (_, Some(n)) => repeat(l, n, left)?,
                    (Some(n), _) => repeat(r, n, right)?,
                    _ if fraction_const(left) || fraction_const(right) => {
                        // Text and lists only repeat by whole numbers: this is arithmetic.
                        Size::NUMBER
                    }
                    _ => {
                        return Err("`*` needs numbers on both sides here: write \
                                    `contact.x|int` or `|float` (text or a list may only be \
                                    repeated by a whole number written in the template)"
                            .into());
                    }
                }
            }
        })
    }
}

/// `value * n`: a number stays a number; text or a list repeats at most `MAX_REPEAT` times.
fn repeat(value: Size, n: i64, expr: &Expr<'_>) -> Result<Size, String> {
    if value.numeric {
        return Ok(Size::NUMBER);
    }
    if !(0..=MAX_REPEAT).contains(&n) {
        return Err(format!(
            "`*` repeats a value at most {MAX_REPEAT} times in messages (use `|int` or \
             `|float` on both sides for arithmetic)"
        ));
    }
    // Only a value read as is may be repeated: a repeat of a repeat compounds.
    if !matches!(
        expr,
        Expr::Var(_) | Expr::Const(_) | Expr::GetAttr(_) | Expr::GetItem(_)
    ) {
        return Err(
            "`*` may repeat a name or a value written in the template, not a computed one".into(),
        );
    }
    Ok(value.times(n as u64))
}

fn int_const(e: &Expr<'_>) -> Option<i64> {
    match e {
        Expr::Const(c) if c.value.is_integer() => i64::try_from(c.value.clone()).ok(),
        _ => None,
    }
}

fn fraction_const(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Const(c) if c.value.is_number() && !c.value.is_integer())
}

fn is_range(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Call(c) if matches!(c.identify_call(), CallType::Function("range")))
}
