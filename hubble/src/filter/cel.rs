//! A subset of CEL (Common Expression Language) for `FlowFilter.experimental.cel_expression`:
//! expressions over the variable `_flow`, evaluated on the flow's proto-JSON form.
//!
//! Supported: literals (int, uint, double, string, bool, null, lists, maps), field selection
//! and indexing, `! - * / % + - < <= > >= == != in && || ?:`, enum constants (`Verdict.DROPPED`,
//! `flow.IPVersion.IPv4`), `has()`, `size()`, `startsWith`, `endsWith`, `contains`, `matches`,
//! `int()`, `uint()`, `double()`, `string()`, and the `all`, `exists`, `exists_one`, `map`,
//! `filter` macros. Unset proto fields read as their default (0, "", false, empty), as in CEL.
//! Unlike cel-go there is no static type check: a result that is not `true` does not match.
//!
//! Limits (see [`crate::limits`]): an expression has at most cel-go's 100,000 code points and
//! 250 levels of nesting (long `&&` / `||` chains are balanced, as cel-go does, and do not
//! count as nesting), so parsing, resolving, evaluating and dropping never run deep on the
//! stack; one evaluation takes at most [`MAX_CEL_EVAL_STEPS`] steps, past which the flow does
//! not match.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use hubble_api::flow;
use regex::Regex;
use serde_json::Value as Json;

use super::regexes::RegexBudget;
use crate::limits::{MAX_CEL_CODE_POINTS, MAX_CEL_EVAL_STEPS, MAX_CEL_RECURSION_DEPTH};

/// The name of the flow variable, as in Hubble.
const FLOW_VAR: &str = "_flow";
/// Stack of the thread that compiles: the parser and the resolver recurse once per level
/// of nesting (a few KiB a level in debug builds), up to [`MAX_CEL_RECURSION_DEPTH`].
const COMPILE_STACK: usize = 16 << 20;

/// A compiled CEL program.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    expr: Expr,
}

impl Program {
    /// Compiles `src`; constant `matches` patterns count against the request's `regexes`.
    /// Runs on a thread of its own with [`COMPILE_STACK`], whatever the caller's stack.
    pub(crate) fn compile(src: &str, regexes: &mut RegexBudget) -> Result<Program, String> {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("cel-compile".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(s, || Self::compile_here(src, regexes))
                .map_err(|e| format!("cannot compile: {e}"))?
                .join()
                .unwrap_or_else(|_| Err("compiling the expression failed".into()))
        })
    }

    fn compile_here(src: &str, regexes: &mut RegexBudget) -> Result<Program, String> {
        let size = src.chars().count();
        if size > MAX_CEL_CODE_POINTS {
            return Err(format!(
                "expression code point size exceeds limit: size: {size}, limit {MAX_CEL_CODE_POINTS}"
            ));
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            depth: 0,
        };
        let expr = p.expr()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.pos]));
        }
        if deeper_than(&expr, MAX_CEL_RECURSION_DEPTH) {
            return Err(too_deep());
        }
        let expr = resolve(expr, &mut vec![FLOW_VAR.to_string()], regexes)?;
        Ok(Program { expr })
    }

    /// Evaluates against a flow in proto-JSON form; true only for a boolean `true` result
    /// (not when the step budget runs out).
    pub(crate) fn matches(&self, flow: &Json) -> bool {
        let mut cx = Cx {
            env: vec![(FLOW_VAR.to_string(), from_json(flow))],
            steps_left: MAX_CEL_EVAL_STEPS,
        };
        matches!(eval(&self.expr, &mut cx), Val::Bool(true))
    }
}

// ---------------------------------------------------------------------------------------------
// Enum constants

/// `Type.NAME` (and `flow.Type.NAME`) → number, and bare `NAME` → number for coercing the
/// enum names found in proto JSON.
struct Enums {
    qualified: HashMap<String, i64>,
    names: HashMap<String, i64>,
}

fn enums() -> &'static Enums {
    static ENUMS: OnceLock<Enums> = OnceLock::new();
    ENUMS.get_or_init(|| {
        let mut e = Enums {
            qualified: HashMap::new(),
            names: HashMap::new(),
        };
        let mut add = |ty: &str, name: fn(i32) -> Option<&'static str>| {
            for n in 0..=1000 {
                if let Some(v) = name(n) {
                    e.qualified.insert(format!("{ty}.{v}"), i64::from(n));
                    e.names.entry(v.to_string()).or_insert(i64::from(n));
                }
            }
        };
        add("Verdict", |n| {
            flow::Verdict::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("DropReason", |n| {
            flow::DropReason::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("TrafficDirection", |n| {
            flow::TrafficDirection::try_from(n)
                .ok()
                .map(|v| v.as_str_name())
        });
        add("FlowType", |n| {
            flow::FlowType::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("IPVersion", |n| {
            flow::IpVersion::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("TraceObservationPoint", |n| {
            flow::TraceObservationPoint::try_from(n)
                .ok()
                .map(|v| v.as_str_name())
        });
        add("TraceReason", |n| {
            flow::TraceReason::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("L7FlowType", |n| {
            flow::L7FlowType::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("AuthType", |n| {
            flow::AuthType::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("DebugCapturePoint", |n| {
            flow::DebugCapturePoint::try_from(n)
                .ok()
                .map(|v| v.as_str_name())
        });
        add("SocketTranslationPoint", |n| {
            flow::SocketTranslationPoint::try_from(n)
                .ok()
                .map(|v| v.as_str_name())
        });
        add("EventType", |n| {
            flow::EventType::try_from(n).ok().map(|v| v.as_str_name())
        });
        add("LostEventSource", |n| {
            flow::LostEventSource::try_from(n)
                .ok()
                .map(|v| v.as_str_name())
        });
        e
    })
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
    Op(&'static str),
}

const OPS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}",
];

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // Strings, optionally raw (r"..." / R'...').
        let raw = (c == b'r' || c == b'R') && matches!(b.get(i + 1), Some(b'"' | b'\''));
        if c == b'"' || c == b'\'' || raw {
            if raw {
                i += 1;
            }
            let q = b[i];
            i += 1;
            let mut s = Vec::new();
            loop {
                let Some(&ch) = b.get(i) else {
                    return Err("unterminated string literal".into());
                };
                i += 1;
                if ch == q {
                    break;
                }
                if ch == b'\\' && !raw {
                    let Some(&e) = b.get(i) else {
                        return Err("unterminated string literal".into());
                    };
                    i += 1;
                    match e {
                        b'n' => s.push(b'\n'),
                        b't' => s.push(b'\t'),
                        b'r' => s.push(b'\r'),
                        b'\\' | b'"' | b'\'' | b'`' | b'?' => s.push(e),
                        b'x' | b'u' | b'U' => {
                            let n = match e {
                                b'x' => 2,
                                b'u' => 4,
                                _ => 8,
                            };
                            let hex = src.get(i..i + n).ok_or("bad escape sequence")?;
                            let cp =
                                u32::from_str_radix(hex, 16).map_err(|_| "bad escape sequence")?;
                            let ch = char::from_u32(cp).ok_or("bad escape sequence")?;
                            let mut buf = [0; 4];
                            s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            i += n;
                        }
                        _ => return Err(format!("bad escape sequence \\{}", e as char)),
                    }
                } else {
                    s.push(ch);
                }
            }
            toks.push(Tok::Str(
                String::from_utf8(s).map_err(|_| "string literal is not UTF-8")?,
            ));
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            if c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
                i += 2;
                while i < b.len() && b[i].is_ascii_hexdigit() {
                    i += 1;
                }
                let v =
                    u64::from_str_radix(&src[start + 2..i], 16).map_err(|_| "bad hex literal")?;
                if matches!(b.get(i), Some(b'u' | b'U')) {
                    i += 1;
                    toks.push(Tok::Uint(v));
                } else {
                    toks.push(Tok::Int(
                        i64::try_from(v).map_err(|_| "int literal out of range")?,
                    ));
                }
                continue;
            }
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                float = true;
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text = &src[start..i];
            if float {
                toks.push(Tok::Double(text.parse().map_err(|_| "bad double literal")?));
            } else if matches!(b.get(i), Some(b'u' | b'U')) {
                i += 1;
                toks.push(Tok::Uint(
                    text.parse().map_err(|_| "uint literal out of range")?,
                ));
            } else {
                toks.push(Tok::Int(
                    text.parse().map_err(|_| "int literal out of range")?,
                ));
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push(Tok::Ident(src[start..i].to_string()));
            continue;
        }
        let Some(op) = OPS.iter().find(|op| b[i..].starts_with(op.as_bytes())) else {
            return Err(format!(
                "unexpected character {:?}",
                src[i..].chars().next().unwrap_or('?')
            ));
        };
        i += op.len();
        toks.push(Tok::Op(op));
    }
    Ok(toks)
}

// ---------------------------------------------------------------------------------------------
// AST and parser

#[derive(Debug, Clone)]
enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Macro {
    All,
    Exists,
    ExistsOne,
    Map,
    Filter,
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Lit),
    Ident(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    // Produced by `resolve`.
    Has(Box<Expr>, String),
    Comp(Macro, Box<Expr>, String, Box<Expr>),
    Matches(Box<Expr>, Regex),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Nesting of what is being parsed: one level per sub-expression entered (parentheses,
    /// arguments, list and map items, conditional branches), per prefix operator and per
    /// link of an operator or member chain (each wraps the tree so far in one more node).
    /// Sibling chains are not added up. Only successful paths restore it: an error ends
    /// the parse.
    depth: usize,
}

type Parsed = Result<Expr, String>;

/// Binary operators by precedence, loosest first (`?:` is looser still).
fn binary_op(tok: Option<&Tok>) -> Option<(&'static str, u8)> {
    Some(match tok? {
        Tok::Op("||") => ("||", 1),
        Tok::Op("&&") => ("&&", 2),
        Tok::Op(o @ ("==" | "!=" | "<" | "<=" | ">" | ">=")) => (o, 3),
        Tok::Ident(i) if i == "in" => ("in", 3),
        Tok::Op(o @ ("+" | "-")) => (o, 4),
        Tok::Op(o @ ("*" | "/" | "%")) => (o, 5),
        _ => return None,
    })
}

/// `terms` joined by `op` as a balanced tree (depth log2 of their number, not the number):
/// `&&` and `||` are commutative in CEL, errors included.
fn balanced(op: &'static str, mut terms: Vec<Expr>) -> Expr {
    while terms.len() > 1 {
        let mut paired = Vec::with_capacity(terms.len().div_ceil(2));
        let mut it = terms.into_iter();
        while let Some(a) = it.next() {
            paired.push(match it.next() {
                Some(b) => Expr::Bin(op, Box::new(a), Box::new(b)),
                None => a,
            });
        }
        terms = paired;
    }
    terms.pop().unwrap_or(Expr::Lit(Lit::Null))
}

fn too_deep() -> String {
    format!("expression recursion limit exceeded: {MAX_CEL_RECURSION_DEPTH}")
}

/// Whether the tree is more than `limit` nodes deep, found without recursing: the parser
/// bounds its own nesting, but a chain's links and its first operand add up, and resolving,
/// evaluating and dropping recurse once per level of the tree.
fn deeper_than(root: &Expr, limit: usize) -> bool {
    let mut todo: Vec<(&Expr, usize)> = vec![(root, 1)];
    while let Some((e, d)) = todo.pop() {
        if d > limit {
            return true;
        }
        let mut push = |c| todo.push((c, d + 1));
        match e {
            Expr::Lit(_) | Expr::Ident(_) => {}
            Expr::Select(a, _)
            | Expr::Not(a)
            | Expr::Neg(a)
            | Expr::Has(a, _)
            | Expr::Matches(a, _) => push(a),
            Expr::Index(a, b) | Expr::Bin(_, a, b) | Expr::Comp(_, a, _, b) => {
                push(a);
                push(b);
            }
            Expr::Cond(c, a, b) => {
                push(c);
                push(a);
                push(b);
            }
            Expr::Call(target, _, args) => {
                if let Some(t) = target {
                    push(t);
                }
                args.iter().for_each(push);
            }
            Expr::List(items) => items.iter().for_each(push),
            Expr::Map(entries) => entries.iter().for_each(|(k, v)| {
                push(k);
                push(v);
            }),
        }
    }
    false
}

// Recursive descent in five frames per level of nesting (expr → binary → unary → member →
// primary); bulky work lives in helpers that return before recursing.
impl Parser {
    /// One more level of nesting, refused past the limit.
    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_CEL_RECURSION_DEPTH {
            Err(too_deep())
        } else {
            Ok(())
        }
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.peek_op(op);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(match self.toks.get(self.pos) {
                Some(t) => format!("expected '{op}', found {t:?}"),
                None => format!("expected '{op}', found end of expression"),
            })
        }
    }

    /// A whole expression, one level deeper: `binary ? binary : expr` or `binary`.
    fn expr(&mut self) -> Parsed {
        let base = self.depth;
        self.deeper()?;
        let cond = self.binary(1)?;
        if !self.eat_op("?") {
            self.depth = base;
            return Ok(cond);
        }
        let a = self.binary(1)?;
        self.expect_op(":")?;
        let b = self.expr()?;
        self.depth = base;
        Ok(Expr::Cond(Box::new(cond), Box::new(a), Box::new(b)))
    }

    /// Operators of precedence `min` and tighter, left-associative; runs of `&&` or `||`
    /// are balanced.
    fn binary(&mut self, min: u8) -> Parsed {
        let base = self.depth;
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = binary_op(self.toks.get(self.pos)) {
            if prec < min {
                break;
            }
            self.pos += 1;
            self.deeper()?;
            let rhs = self.operand(prec)?;
            lhs = if matches!(op, "&&" | "||") {
                self.logical_run(op, prec, lhs, rhs)?
            } else {
                Expr::Bin(op, Box::new(lhs), Box::new(rhs))
            };
        }
        self.depth = base;
        Ok(lhs)
    }

    /// The right operand of an operator of precedence `prec`, at the current depth.
    fn operand(&mut self, prec: u8) -> Parsed {
        let base = self.depth;
        let e = self.binary(prec + 1)?;
        self.depth = base;
        Ok(e)
    }

    /// The rest of a run `a op b op c …` after `a op b`.
    fn logical_run(&mut self, op: &'static str, prec: u8, a: Expr, b: Expr) -> Parsed {
        let mut terms = vec![a, b];
        while self.eat_op(op) {
            terms.push(self.operand(prec)?);
        }
        Ok(balanced(op, terms))
    }

    /// Prefix `!` and `-` (a run of them is a loop, one level each), then a member chain.
    fn unary(&mut self) -> Parsed {
        let base = self.depth;
        let start = self.pos;
        while self.peek_op("!") || self.peek_op("-") {
            self.pos += 1;
            self.deeper()?;
        }
        let prefix = start..self.pos;
        let mut e = self.member()?;
        for i in prefix.rev() {
            e = match (&self.toks[i], e) {
                (Tok::Op("!"), e) => Expr::Not(Box::new(e)),
                // Fold negative literals so that i64::MIN parses.
                (_, Expr::Lit(Lit::Int(n))) => Expr::Lit(Lit::Int(n.wrapping_neg())),
                (_, Expr::Lit(Lit::Double(d))) => Expr::Lit(Lit::Double(-d)),
                (_, e) => Expr::Neg(Box::new(e)),
            };
        }
        self.depth = base;
        Ok(e)
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        if self.eat_op(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_op(close) {
                return Ok(args);
            }
            self.expect_op(",")?;
            if self.eat_op(close) {
                return Ok(args);
            }
        }
    }

    /// A primary followed by `.field`, `.method(args)` and `[index]` links.
    fn member(&mut self) -> Parsed {
        let base = self.depth;
        let mut e = self.primary()?;
        loop {
            if self.eat_op(".") {
                self.deeper()?;
                e = self.select(e)?;
            } else if self.eat_op("[") {
                self.deeper()?;
                let idx = self.expr()?;
                self.expect_op("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                self.depth = base;
                return Ok(e);
            }
        }
    }

    /// `.name` or `.name(args)` after `e`.
    fn select(&mut self, e: Expr) -> Parsed {
        let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
            return Err("expected a field name after '.'".into());
        };
        self.pos += 1;
        Ok(if self.eat_op("(") {
            Expr::Call(Some(Box::new(e)), name, self.args(")")?)
        } else {
            Expr::Select(Box::new(e), name)
        })
    }

    fn primary(&mut self) -> Parsed {
        let Some(tok) = self.toks.get(self.pos) else {
            return Err("unexpected end of expression".into());
        };
        self.pos += 1;
        match tok {
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("[") => Ok(Expr::List(self.args("]")?)),
            Tok::Op("{") => self.map(),
            Tok::Ident(_) => self.ident(),
            _ => self.literal(),
        }
    }

    /// The identifier just taken: a constant, a global call or a name.
    fn ident(&mut self) -> Parsed {
        let Some(Tok::Ident(id)) = self.toks.get(self.pos - 1).cloned() else {
            return Err("expected an identifier".into());
        };
        Ok(match id.as_str() {
            "true" => Expr::Lit(Lit::Bool(true)),
            "false" => Expr::Lit(Lit::Bool(false)),
            "null" => Expr::Lit(Lit::Null),
            _ if self.eat_op("(") => Expr::Call(None, id, self.args(")")?),
            _ => Expr::Ident(id),
        })
    }

    /// The literal (or leading-dot name, `.flow.Verdict.DROPPED`) just taken.
    fn literal(&mut self) -> Parsed {
        Ok(match self.toks[self.pos - 1].clone() {
            Tok::Int(n) => Expr::Lit(Lit::Int(n)),
            Tok::Uint(n) => Expr::Lit(Lit::Uint(n)),
            Tok::Double(d) => Expr::Lit(Lit::Double(d)),
            Tok::Str(s) => Expr::Lit(Lit::Str(s)),
            Tok::Op(".") => {
                let Some(Tok::Ident(id)) = self.toks.get(self.pos).cloned() else {
                    return Err("expected an identifier after '.'".into());
                };
                self.pos += 1;
                Expr::Ident(id)
            }
            t => return Err(format!("unexpected {t:?}")),
        })
    }

    /// A map literal after its `{`.
    fn map(&mut self) -> Parsed {
        let mut entries = Vec::new();
        if self.eat_op("}") {
            return Ok(Expr::Map(entries));
        }
        loop {
            let k = self.expr()?;
            self.expect_op(":")?;
            let v = self.expr()?;
            entries.push((k, v));
            if self.eat_op("}") {
                return Ok(Expr::Map(entries));
            }
            self.expect_op(",")?;
            if self.eat_op("}") {
                return Ok(Expr::Map(entries));
            }
        }
    }
}

/// The dotted name of a select chain rooted at an identifier (`a.b.c`), if it is one.
fn dotted(e: &Expr) -> Option<String> {
    match e {
        Expr::Ident(id) => Some(id.clone()),
        Expr::Select(inner, f) => dotted(inner).map(|d| format!("{d}.{f}")),
        _ => None,
    }
}

fn root_ident(e: &Expr) -> Option<&str> {
    match e {
        Expr::Ident(id) => Some(id),
        Expr::Select(inner, _) => root_ident(inner),
        _ => None,
    }
}

/// Binds identifiers: variables stay, enum constants become literals, macros are expanded,
/// constant `matches` patterns are compiled; anything else is an error.
fn resolve(e: Expr, scope: &mut Vec<String>, regexes: &mut RegexBudget) -> Result<Expr, String> {
    let r = |e: Expr, scope: &mut Vec<String>, regexes: &mut RegexBudget| {
        resolve(e, scope, regexes).map(Box::new)
    };
    Ok(match e {
        Expr::Ident(_) | Expr::Select(..)
            if root_ident(&e).is_some_and(|root| !scope.iter().any(|v| v == root)) =>
        {
            let name = dotted(&e).unwrap_or_default();
            let key = name.strip_prefix("flow.").unwrap_or(&name);
            match enums().qualified.get(key) {
                Some(n) => Expr::Lit(Lit::Int(*n)),
                None => return Err(format!("undeclared reference to '{name}'")),
            }
        }
        Expr::Ident(id) => Expr::Ident(id),
        Expr::Select(inner, f) => Expr::Select(r(*inner, scope, regexes)?, f),
        Expr::Index(a, b) => Expr::Index(r(*a, scope, regexes)?, r(*b, scope, regexes)?),
        Expr::List(items) => Expr::List(
            items
                .into_iter()
                .map(|x| resolve(x, scope, regexes))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Map(entries) => Expr::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((resolve(k, scope, regexes)?, resolve(v, scope, regexes)?)))
                .collect::<Result<_, String>>()?,
        ),
        Expr::Not(a) => Expr::Not(r(*a, scope, regexes)?),
        Expr::Neg(a) => Expr::Neg(r(*a, scope, regexes)?),
        Expr::Bin(op, a, b) => Expr::Bin(op, r(*a, scope, regexes)?, r(*b, scope, regexes)?),
        Expr::Cond(c, a, b) => Expr::Cond(
            r(*c, scope, regexes)?,
            r(*a, scope, regexes)?,
            r(*b, scope, regexes)?,
        ),
        Expr::Call(None, name, mut args) if name == "has" => {
            if args.len() != 1 {
                return Err("has() takes one argument".into());
            }
            match args.pop() {
                Some(Expr::Select(inner, f)) => Expr::Has(r(*inner, scope, regexes)?, f),
                _ => return Err("invalid argument to has() macro".into()),
            }
        }
        Expr::Call(Some(target), name, args)
            if matches!(
                name.as_str(),
                "all" | "exists" | "exists_one" | "map" | "filter"
            ) =>
        {
            let kind = match name.as_str() {
                "all" => Macro::All,
                "exists" => Macro::Exists,
                "exists_one" => Macro::ExistsOne,
                "map" => Macro::Map,
                _ => Macro::Filter,
            };
            let [Expr::Ident(var), body] = <[Expr; 2]>::try_from(args)
                .map_err(|_| format!("{name}() takes a variable and an expression"))?
            else {
                return Err(format!("{name}() takes a variable name first"));
            };
            let target = r(*target, scope, regexes)?;
            scope.push(var.clone());
            let body = resolve(body, scope, regexes);
            scope.pop();
            Expr::Comp(kind, target, var, Box::new(body?))
        }
        Expr::Call(target, name, args) => {
            let target = target.map(|t| r(*t, scope, regexes)).transpose()?;
            let mut args: Vec<Expr> = args
                .into_iter()
                .map(|a| resolve(a, scope, regexes))
                .collect::<Result<_, _>>()?;
            // Precompile constant regexes.
            let pattern = match (&target, name.as_str(), args.as_slice()) {
                (Some(_), "matches", [Expr::Lit(Lit::Str(p))]) => Some(p.clone()),
                (None, "matches", [_, Expr::Lit(Lit::Str(p))]) => Some(p.clone()),
                _ => None,
            };
            if let Some(p) = pattern {
                regexes.take(1)?;
                let re =
                    RegexBudget::compile(&p).map_err(|e| format!("invalid regex {p:?}: {e}"))?;
                let subject = match target {
                    Some(t) => t,
                    None => Box::new(args.remove(0)),
                };
                return Ok(Expr::Matches(subject, re));
            }
            if !matches!(
                name.as_str(),
                "size"
                    | "startsWith"
                    | "endsWith"
                    | "contains"
                    | "matches"
                    | "int"
                    | "uint"
                    | "double"
                    | "string"
            ) {
                return Err(format!("undeclared reference to '{name}'"));
            }
            Expr::Call(target, name, args)
        }
        e @ (Expr::Lit(_) | Expr::Has(..) | Expr::Comp(..) | Expr::Matches(..)) => e,
    })
}

// ---------------------------------------------------------------------------------------------
// Values and evaluation

#[derive(Debug, Clone)]
enum Val<'a> {
    /// An unset proto field: equal to every type's default.
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(Cow<'a, str>),
    List(Vec<Val<'a>>),
    Obj(&'a serde_json::Map<String, Json>),
    Map(Vec<(Val<'a>, Val<'a>)>),
    Err,
}

fn from_json(v: &Json) -> Val<'_> {
    match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Val::Int)
            .or_else(|| n.as_u64().map(Val::Uint))
            .unwrap_or_else(|| Val::Double(n.as_f64().unwrap_or(0.0))),
        Json::String(s) => Val::Str(Cow::Borrowed(s)),
        Json::Array(a) => Val::List(a.iter().map(from_json).collect()),
        Json::Object(o) => Val::Obj(o),
    }
}

/// A number for comparisons: numbers, and strings holding a 64-bit integer (proto JSON) or
/// an enum name.
fn as_num(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Absent => Some(0.0),
        Val::Int(n) => Some(*n as f64),
        Val::Uint(n) => Some(*n as f64),
        Val::Double(d) => Some(*d),
        Val::Str(s) => s
            .parse::<f64>()
            .ok()
            .or_else(|| enums().names.get(s.as_ref()).map(|n| *n as f64)),
        _ => None,
    }
}

fn is_default(v: &Val<'_>) -> bool {
    match v {
        Val::Absent | Val::Null => true,
        Val::Bool(b) => !b,
        Val::Int(n) => *n == 0,
        Val::Uint(n) => *n == 0,
        Val::Double(d) => *d == 0.0,
        Val::Str(s) => s.is_empty() || enums().names.get(s.as_ref()) == Some(&0),
        Val::List(l) => l.is_empty(),
        Val::Obj(o) => o.is_empty(),
        Val::Map(m) => m.is_empty(),
        Val::Err => false,
    }
}

fn equal(a: &Val<'_>, b: &Val<'_>) -> Option<bool> {
    use Val::*;
    Some(match (a, b) {
        (Err, _) | (_, Err) => return None,
        (Absent, x) | (x, Absent) => is_default(x),
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Bool(x), Bool(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (List(x), List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q).unwrap_or(false))
        }
        (Obj(x), Obj(y)) => x == y,
        (Map(x), Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter().any(|(k2, v2)| {
                        equal(k, k2).unwrap_or(false) && equal(v, v2).unwrap_or(false)
                    })
                })
        }
        (Int(_) | Uint(_) | Double(_) | Str(_), Int(_) | Uint(_) | Double(_) | Str(_)) => {
            match (as_num(a), as_num(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        _ => false,
    })
}

fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) if as_num(a).is_none() || as_num(b).is_none() => Some(x.cmp(y)),
        (Val::Absent, Val::Str(y)) if y.parse::<f64>().is_err() => Some("".cmp(y.as_ref())),
        (Val::Str(x), Val::Absent) if x.parse::<f64>().is_err() => Some(x.as_ref().cmp("")),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => as_num(a)?.partial_cmp(&as_num(b)?),
    }
}

fn select<'a>(v: &Val<'a>, field: &str) -> Val<'a> {
    match v {
        Val::Obj(o) => o.get(field).map_or(Val::Absent, from_json),
        Val::Absent => Val::Absent,
        Val::Map(m) => m
            .iter()
            .find(|(k, _)| matches!(k, Val::Str(s) if s == field))
            .map_or(Val::Err, |(_, v)| v.clone()),
        _ => Val::Err,
    }
}

fn arith<'a>(op: &str, a: Val<'a>, b: Val<'a>) -> Val<'a> {
    use Val::*;
    match (op, a, b) {
        ("+", Str(x), Str(y)) => Str(Cow::Owned(format!("{x}{y}"))),
        ("+", List(mut x), List(y)) => {
            x.extend(y);
            List(x)
        }
        (_, Int(x), Int(y)) => match op {
            "+" => x.checked_add(y).map_or(Err, Int),
            "-" => x.checked_sub(y).map_or(Err, Int),
            "*" => x.checked_mul(y).map_or(Err, Int),
            "/" => x.checked_div(y).map_or(Err, Int),
            _ => x.checked_rem(y).map_or(Err, Int),
        },
        (_, Uint(x), Uint(y)) => match op {
            "+" => x.checked_add(y).map_or(Err, Uint),
            "-" => x.checked_sub(y).map_or(Err, Uint),
            "*" => x.checked_mul(y).map_or(Err, Uint),
            "/" => x.checked_div(y).map_or(Err, Uint),
            _ => x.checked_rem(y).map_or(Err, Uint),
        },
        (_, Double(x), Double(y)) => match op {
            "+" => Double(x + y),
            "-" => Double(x - y),
            "*" => Double(x * y),
            "/" => Double(x / y),
            _ => Err,
        },
        // Proto JSON numbers of other widths: compute as the literal's kind.
        (_, x @ (Absent | Str(_) | Int(_) | Uint(_)), y @ (Int(_) | Uint(_) | Absent | Str(_))) => {
            match (as_num(&x), as_num(&y)) {
                (Some(p), Some(q)) if p.fract() == 0.0 && q.fract() == 0.0 => {
                    arith(op, Int(p as i64), Int(q as i64))
                }
                _ => Err,
            }
        }
        _ => Err,
    }
}

fn text<'a>(v: &Val<'a>) -> Option<Cow<'a, str>> {
    match v {
        Val::Str(s) => Some(s.clone()),
        Val::Absent => Some(Cow::Borrowed("")),
        _ => None,
    }
}

/// One evaluation: the variables in scope and the steps left.
struct Cx<'a> {
    env: Vec<(String, Val<'a>)>,
    steps_left: u64,
}

impl Cx<'_> {
    /// Takes `n` steps; false (and nothing left) when there are not that many.
    fn charge(&mut self, n: usize) -> bool {
        match self.steps_left.checked_sub(n as u64) {
            Some(left) => {
                self.steps_left = left;
                true
            }
            None => {
                self.steps_left = 0;
                false
            }
        }
    }
}

/// Bytes of string copied per evaluation step.
const BYTES_PER_STEP: usize = 64;

fn eval<'a>(e: &'a Expr, cx: &mut Cx<'a>) -> Val<'a> {
    if !cx.charge(1) {
        return Val::Err;
    }
    match e {
        Expr::Lit(l) => match l {
            Lit::Null => Val::Null,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(n) => Val::Int(*n),
            Lit::Uint(n) => Val::Uint(*n),
            Lit::Double(d) => Val::Double(*d),
            Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
        },
        Expr::Ident(id) => cx
            .env
            .iter()
            .rev()
            .find(|(n, _)| n == id)
            .map_or(Val::Err, |(_, v)| v.clone()),
        Expr::Select(inner, f) => select(&eval(inner, cx), f),
        Expr::Index(a, i) => {
            let (a, i) = (eval(a, cx), eval(i, cx));
            match (&a, &i) {
                (Val::List(l), _) => match as_num(&i) {
                    Some(n) if n >= 0.0 && (n as usize) < l.len() => l[n as usize].clone(),
                    _ => Val::Err,
                },
                (Val::Obj(_) | Val::Absent | Val::Map(_), Val::Str(k)) => select(&a, k),
                _ => Val::Err,
            }
        }
        Expr::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for x in items {
                out.push(eval(x, cx));
                if cx.steps_left == 0 {
                    return Val::Err;
                }
            }
            Val::List(out)
        }
        Expr::Map(entries) => Val::Map(
            entries
                .iter()
                .map(|(k, v)| (eval(k, cx), eval(v, cx)))
                .collect(),
        ),
        Expr::Not(a) => match eval(a, cx) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Err,
        },
        Expr::Neg(a) => match eval(a, cx) {
            Val::Int(n) => n.checked_neg().map_or(Val::Err, Val::Int),
            Val::Double(d) => Val::Double(-d),
            _ => Val::Err,
        },
        Expr::Cond(c, a, b) => match eval(c, cx) {
            Val::Bool(true) => eval(a, cx),
            Val::Bool(false) => eval(b, cx),
            _ => Val::Err,
        },
        Expr::Bin("&&", a, b) => match (eval(a, cx), eval(b, cx)) {
            (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
            (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
            _ => Val::Err,
        },
        Expr::Bin("||", a, b) => match (eval(a, cx), eval(b, cx)) {
            (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
            (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
            _ => Val::Err,
        },
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, cx), eval(b, cx));
            match *op {
                "==" => equal(&a, &b).map_or(Val::Err, Val::Bool),
                "!=" => equal(&a, &b).map_or(Val::Err, |x| Val::Bool(!x)),
                "<" | "<=" | ">" | ">=" => match compare(&a, &b) {
                    Some(o) => Val::Bool(match *op {
                        "<" => o.is_lt(),
                        "<=" => o.is_le(),
                        ">" => o.is_gt(),
                        _ => o.is_ge(),
                    }),
                    None => Val::Err,
                },
                "in" => match &b {
                    Val::List(l) => Val::Bool(l.iter().any(|x| equal(&a, x).unwrap_or(false))),
                    Val::Obj(o) => {
                        text(&a).map_or(Val::Err, |k| Val::Bool(o.contains_key(k.as_ref())))
                    }
                    Val::Map(m) => Val::Bool(m.iter().any(|(k, _)| equal(&a, k).unwrap_or(false))),
                    Val::Absent => Val::Bool(false),
                    _ => Val::Err,
                },
                _ => {
                    // Concatenations copy: each element, and each few bytes, is a step.
                    let copied = match (&a, &b) {
                        (Val::List(x), Val::List(y)) => x.len() + y.len(),
                        (Val::Str(x), Val::Str(y)) => (x.len() + y.len()) / BYTES_PER_STEP,
                        _ => 0,
                    };
                    if !cx.charge(copied) {
                        return Val::Err;
                    }
                    arith(op, a, b)
                }
            }
        }
        Expr::Has(inner, f) => match eval(inner, cx) {
            Val::Obj(o) => Val::Bool(o.get(f).is_some_and(|v| !is_default(&from_json(v)))),
            Val::Absent => Val::Bool(false),
            Val::Map(m) => Val::Bool(m.iter().any(|(k, _)| matches!(k, Val::Str(s) if s == f))),
            _ => Val::Err,
        },
        Expr::Matches(subject, re) => {
            text(&eval(subject, cx)).map_or(Val::Err, |s| Val::Bool(re.is_match(&s)))
        }
        Expr::Comp(kind, range, var, body) => {
            let items = match eval(range, cx) {
                Val::List(l) => l,
                Val::Absent => Vec::new(),
                Val::Obj(o) => o
                    .keys()
                    .map(|k| Val::Str(Cow::Borrowed(k.as_str())))
                    .collect(),
                Val::Map(m) => m.into_iter().map(|(k, _)| k).collect(),
                _ => return Val::Err,
            };
            let mut results = Vec::new();
            let mut count = 0usize;
            let mut errored = false;
            for item in items {
                if cx.steps_left == 0 {
                    return Val::Err;
                }
                cx.env.push((var.clone(), item.clone()));
                let r = eval(body, cx);
                cx.env.pop();
                match kind {
                    Macro::Map => results.push(r),
                    _ => match r {
                        Val::Bool(true) => {
                            count += 1;
                            if *kind == Macro::Filter {
                                results.push(item);
                            } else if *kind == Macro::Exists {
                                return Val::Bool(true);
                            }
                        }
                        Val::Bool(false) => {
                            if *kind == Macro::All {
                                return Val::Bool(false);
                            }
                        }
                        _ => errored = true,
                    },
                }
            }
            match kind {
                Macro::Map | Macro::Filter if errored => Val::Err,
                Macro::Map | Macro::Filter => Val::List(results),
                _ if errored => Val::Err,
                Macro::All => Val::Bool(true),
                Macro::Exists => Val::Bool(false),
                Macro::ExistsOne => Val::Bool(count == 1),
            }
        }
        Expr::Call(target, name, args) => {
            let mut vals: Vec<Val<'a>> = Vec::with_capacity(args.len() + 1);
            if let Some(t) = target {
                vals.push(eval(t, cx));
            }
            for a in args {
                vals.push(eval(a, cx));
            }
            call(name, &vals, cx)
        }
    }
}

fn call<'a>(name: &str, args: &[Val<'a>], cx: &mut Cx<'a>) -> Val<'a> {
    match (name, args) {
        ("size", [v]) => match v {
            Val::Str(s) => Val::Int(s.chars().count() as i64),
            Val::List(l) => Val::Int(l.len() as i64),
            Val::Obj(o) => Val::Int(o.len() as i64),
            Val::Map(m) => Val::Int(m.len() as i64),
            Val::Absent => Val::Int(0),
            _ => Val::Err,
        },
        ("startsWith" | "endsWith" | "contains", [s, p]) => match (text(s), text(p)) {
            (Some(s), Some(p)) => Val::Bool(match name {
                "startsWith" => s.starts_with(p.as_ref()),
                "endsWith" => s.ends_with(p.as_ref()),
                _ => s.contains(p.as_ref()),
            }),
            _ => Val::Err,
        },
        ("matches", [s, p]) => match (text(s), text(p)) {
            // A pattern known only now: compiled under the size cap, at a cost.
            (Some(s), Some(p)) if cx.charge(p.len() + s.len() / BYTES_PER_STEP) => {
                RegexBudget::compile(&p).map_or(Val::Err, |re| Val::Bool(re.is_match(&s)))
            }
            _ => Val::Err,
        },
        ("int", [v]) => match v {
            Val::Str(s) => s
                .parse()
                .ok()
                .or_else(|| enums().names.get(s.as_ref()).copied())
                .map_or(Val::Err, Val::Int),
            Val::Double(d) if d.is_finite() => Val::Int(*d as i64),
            Val::Uint(n) => i64::try_from(*n).map_or(Val::Err, Val::Int),
            Val::Int(n) => Val::Int(*n),
            Val::Absent => Val::Int(0),
            _ => Val::Err,
        },
        ("uint", [v]) => match v {
            Val::Str(s) => s.parse().map_or(Val::Err, Val::Uint),
            Val::Int(n) => u64::try_from(*n).map_or(Val::Err, Val::Uint),
            Val::Double(d) if *d >= 0.0 && d.is_finite() => Val::Uint(*d as u64),
            Val::Uint(n) => Val::Uint(*n),
            Val::Absent => Val::Uint(0),
            _ => Val::Err,
        },
        ("double", [v]) => as_num(v).map_or(Val::Err, Val::Double),
        ("string", [v]) => match v {
            Val::Str(s) => Val::Str(s.clone()),
            Val::Int(n) => Val::Str(Cow::Owned(n.to_string())),
            Val::Uint(n) => Val::Str(Cow::Owned(n.to_string())),
            Val::Double(d) => Val::Str(Cow::Owned(d.to_string())),
            Val::Bool(b) => Val::Str(Cow::Owned(b.to_string())),
            Val::Absent => Val::Str(Cow::Borrowed("")),
            _ => Val::Err,
        },
        _ => Val::Err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Json {
        serde_json::json!({
            "verdict": "DROPPED",
            "drop_reason_desc": "POLICY_DENIED",
            "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 41234, "destination_port": 80, "flags": {"SYN": true}}},
            "source": {"namespace": "default", "pod_name": "xwing", "labels": ["k8s:app=xwing", "k8s:class=xwing"]},
            "destination": {"namespace": "empire", "pod_name": "deathstar-1", "identity": 15153},
            "l7": {"latency_ns": "12000"},
            "is_reply": false,
        })
    }

    fn eval_src(src: &str) -> bool {
        Program::compile(src, &mut RegexBudget::new())
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .matches(&flow())
    }

    #[test]
    fn comparisons_and_enums() {
        assert!(eval_src("_flow.verdict == Verdict.DROPPED"));
        assert!(eval_src("_flow.verdict == flow.Verdict.DROPPED"));
        assert!(eval_src("_flow.verdict == 2"));
        assert!(!eval_src("_flow.verdict == Verdict.FORWARDED"));
        assert!(eval_src(
            "_flow.traffic_direction == TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN"
        ));
        assert!(eval_src("_flow.IP.ipVersion == IPVersion.IPv4"));
        assert!(eval_src("_flow.l4.TCP.destination_port == 80"));
        assert!(eval_src("_flow.l4.TCP.destination_port < 1024u"));
        assert!(
            eval_src("_flow.l4.UDP.destination_port == 0"),
            "unset reads as default"
        );
        assert!(
            eval_src("_flow.l7.latency_ns > 10000u"),
            "uint64 as JSON string"
        );
        assert!(eval_src(
            "_flow.source.namespace != _flow.destination.namespace"
        ));
    }

    #[test]
    fn logic_strings_and_macros() {
        assert!(eval_src(
            "_flow.source.pod_name.startsWith('x') && _flow.destination.pod_name.contains(\"star\")"
        ));
        assert!(eval_src(
            "_flow.destination.pod_name.matches('^death.*-[0-9]+$')"
        ));
        assert!(eval_src("'k8s:app=xwing' in _flow.source.labels"));
        assert!(eval_src(
            "_flow.source.labels.exists(l, l.endsWith('=xwing'))"
        ));
        assert!(!eval_src(
            "_flow.source.labels.all(l, l.startsWith('k8s:app'))"
        ));
        assert!(eval_src(
            "size(_flow.source.labels) == 2 && _flow.source.labels.size() == 2"
        ));
        assert!(eval_src("has(_flow.l4.TCP) && !has(_flow.l4.UDP)"));
        assert!(eval_src("_flow.destination.identity in [1, 15153]"));
        assert!(eval_src(
            "_flow.verdict == Verdict.FORWARDED || _flow.l4.TCP.flags.SYN"
        ));
        assert!(eval_src(
            "(_flow.l4.TCP.source_port > 1024 ? 'hi' : 'lo') == 'hi'"
        ));
        assert!(eval_src(
            "_flow.source.labels.filter(l, l.contains('class')).size() == 1"
        ));
        assert!(eval_src("_flow.destination.identity + 1 == 15154"));
    }

    #[test]
    fn non_bool_or_errors_do_not_match() {
        assert!(!eval_src("_flow.source.pod_name"));
        assert!(!eval_src("_flow.source.pod_name.startsWith(1)"));
        assert!(!eval_src("1 / 0 == 1"));
    }

    /// Compiles and evaluates `src` on a thread with a 2 MiB stack (Rust's default for
    /// spawned threads, and what tokio's workers get): limits must hold there.
    fn on_small_stack(src: String) -> Result<bool, String> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                Program::compile(&src, &mut RegexBudget::new()).map(|p| p.matches(&flow()))
            })
            .unwrap()
            .join()
            .expect("no panic or overflow")
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let chain = |op: &str, n: usize| {
            let mut s = "1".to_string();
            for _ in 0..n {
                s.push_str(op);
                s.push('1');
            }
            s + " == 1"
        };
        for src in [
            "(".repeat(100_000),
            format!("{}true", "!".repeat(60_000)),
            format!("{}1 == 1", "-".repeat(60_000)),
            "[".repeat(60_000),
            "{1:".repeat(30_000),
            format!("_flow{} == 1", ".a".repeat(40_000)),
            format!("_flow{} == 1", "[0]".repeat(30_000)),
            format!("{}1{} == 1", "size(".repeat(16_000), ")".repeat(16_000)),
            chain(" + ", 20_000),
            chain(" * ", 20_000),
            chain(" == ", 15_000),
            format!("{}1", "true ? 1 : ".repeat(8_000)),
        ] {
            let head: String = src.chars().take(12).collect();
            let err = on_small_stack(src).expect_err(&head);
            assert!(
                err.contains("recursion limit exceeded: 250"),
                "{head}: {err}"
            );
        }
    }

    #[test]
    fn long_expressions_are_refused() {
        let src = format!("'{}' == ''", "x".repeat(100_000));
        let err = on_small_stack(src).unwrap_err();
        assert_eq!(
            err,
            "expression code point size exceeds limit: size: 100008, limit 100000"
        );
        // Code points, not bytes: 99,990 two-byte characters fit.
        let src = format!("'{}' != ''", "é".repeat(99_990));
        assert_eq!(on_small_stack(src), Ok(true));
    }

    #[test]
    fn nesting_within_the_limit_compiles_and_evaluates() {
        let n = 240;
        for src in [
            format!("{}true{}", "(".repeat(n), ")".repeat(n)),
            format!("{}true", "!!".repeat(n / 2)),
            format!("size({}1{}) == 1", "[".repeat(n), "]".repeat(n)),
            format!(
                "_flow.source.labels.all(a, {}true{})",
                "_flow.source.labels.exists(b, ".repeat(n / 5),
                ")".repeat(n / 5)
            ),
        ] {
            let head: String = src.chars().take(12).collect();
            assert_eq!(on_small_stack(src), Ok(true), "{head}");
        }
    }

    #[test]
    fn long_or_and_chains_are_balanced_not_deep() {
        // A long list of alternatives is an ordinary filter, not nesting.
        let alts: Vec<String> = (0..2_000)
            .map(|i| format!("_flow.source.pod_name == 'pod-{i}'"))
            .collect();
        let src = format!("{} || _flow.source.pod_name == 'xwing'", alts.join(" || "));
        assert_eq!(on_small_stack(src), Ok(true));
        let src = format!("{} && true", vec!["true"; 10_000].join(" && "));
        assert_eq!(on_small_stack(src), Ok(true));
    }

    #[test]
    fn evaluation_cost_is_bounded() {
        // 10^12 steps and as many list elements without a bound: refused at run time
        // (the flow does not match) after the step budget.
        let list = format!(
            "[{}]",
            (0..1000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        for src in [
            format!("{list}.all(a, {list}.all(b, {list}.all(c, {list}.all(d, true))))"),
            format!("size({list}.map(a, {list}.map(b, {list}.map(c, {list})))) > 0"),
            format!("{list}.exists(a, {list}.exists(b, {list}.exists(c, 'x' + string(c) == 'y')))"),
        ] {
            assert_eq!(on_small_stack(src), Ok(false));
        }
        // A modest comprehension stays well inside the budget.
        let src = format!("{list}.exists(a, a == 999) && {list}.all(a, a < 1000)");
        assert_eq!(on_small_stack(src), Ok(true));
    }

    #[test]
    fn compile_errors() {
        for bad in [
            "",
            "_flow.verdict ==",
            "verdict == 1",
            "Verdict.NOPE == 1",
            "_flow.x.matches('(')",
            "unknownfn(_flow)",
            "has(_flow)",
            "'unterminated",
            "_flow.verdict = 1",
        ] {
            assert!(
                Program::compile(bad, &mut RegexBudget::new()).is_err(),
                "{bad:?} should fail"
            );
        }
    }
}
