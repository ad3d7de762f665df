//! A subset of CEL (Common Expression Language) for `FlowFilter.experimental.cel_expression`:
//! expressions over the variable `_flow`, evaluated on the flow's proto-JSON form.
//!
//! Supported: literals (int, uint, double, string, bool, null, lists, maps), field selection
//! and indexing, `! - * / % + - < <= > >= == != in && || ?:`, enum constants (`Verdict.DROPPED`,
//! `flow.IPVersion.IPv4`), `has()`, `size()`, `startsWith`, `endsWith`, `contains`, `matches`,
//! `int()`, `uint()`, `double()`, `string()`, and the `all`, `exists`, `exists_one`, `map`,
//! `filter` macros. Unset proto fields read as their default (0, "", false, empty), as in CEL.
//! Unlike cel-go there is no static type check: a result that is not `true` does not match.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use hubble_api::flow;
use regex::Regex;
use serde_json::Value as Json;

/// The name of the flow variable, as in Hubble.
const FLOW_VAR: &str = "_flow";

/// A compiled CEL program.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    expr: Expr,
}

impl Program {
    pub(crate) fn compile(src: &str) -> Result<Program, String> {
        let toks = lex(src)?;
        let mut p = Parser { toks, pos: 0 };
        let expr = p.expr()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.pos]));
        }
        let expr = resolve(expr, &mut vec![FLOW_VAR.to_string()])?;
        Ok(Program { expr })
    }

    /// Evaluates against a flow in proto-JSON form; true only for a boolean `true` result.
    pub(crate) fn matches(&self, flow: &Json) -> bool {
        let mut env = vec![(FLOW_VAR.to_string(), from_json(flow))];
        matches!(eval(&self.expr, &mut env), Val::Bool(true))
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
}

impl Parser {
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

    fn expr(&mut self) -> Result<Expr, String> {
        let cond = self.or()?;
        if self.eat_op("?") {
            let a = self.or()?;
            self.expect_op(":")?;
            let b = self.expr()?;
            return Ok(Expr::Cond(Box::new(cond), Box::new(a), Box::new(b)));
        }
        Ok(cond)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_op("||") {
            e = Expr::Bin("||", Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.relation()?;
        while self.eat_op("&&") {
            e = Expr::Bin("&&", Box::new(e), Box::new(self.relation()?));
        }
        Ok(e)
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let mut e = self.addition()?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op(o)) if matches!(*o, "==" | "!=" | "<" | "<=" | ">" | ">=") => *o,
                Some(Tok::Ident(i)) if i == "in" => "in",
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Bin(op, Box::new(e), Box::new(self.addition()?));
        }
    }

    fn addition(&mut self) -> Result<Expr, String> {
        let mut e = self.multiplication()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.multiplication()?));
        }
    }

    fn multiplication(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                "*"
            } else if self.eat_op("/") {
                "/"
            } else if self.eat_op("%") {
                "%"
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            // Fold negative literals so that i64::MIN parses.
            return Ok(match self.unary()? {
                Expr::Lit(Lit::Int(n)) => Expr::Lit(Lit::Int(-n)),
                Expr::Lit(Lit::Double(d)) => Expr::Lit(Lit::Double(-d)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        self.member()
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

    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat_op(".") {
                let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
                    return Err("expected a field name after '.'".into());
                };
                self.pos += 1;
                if self.eat_op("(") {
                    let args = self.args(")")?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat_op("[") {
                let idx = self.expr()?;
                self.expect_op("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let Some(tok) = self.toks.get(self.pos).cloned() else {
            return Err("unexpected end of expression".into());
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Int(n) => Expr::Lit(Lit::Int(n)),
            Tok::Uint(n) => Expr::Lit(Lit::Uint(n)),
            Tok::Double(d) => Expr::Lit(Lit::Double(d)),
            Tok::Str(s) => Expr::Lit(Lit::Str(s)),
            Tok::Ident(id) => match id.as_str() {
                "true" => Expr::Lit(Lit::Bool(true)),
                "false" => Expr::Lit(Lit::Bool(false)),
                "null" => Expr::Lit(Lit::Null),
                _ if self.eat_op("(") => Expr::Call(None, id, self.args(")")?),
                _ => Expr::Ident(id),
            },
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect_op(")")?;
                e
            }
            Tok::Op("[") => Expr::List(self.args("]")?),
            Tok::Op("{") => {
                let mut entries = Vec::new();
                if !self.eat_op("}") {
                    loop {
                        let k = self.expr()?;
                        self.expect_op(":")?;
                        let v = self.expr()?;
                        entries.push((k, v));
                        if self.eat_op("}") {
                            break;
                        }
                        self.expect_op(",")?;
                        if self.eat_op("}") {
                            break;
                        }
                    }
                }
                Expr::Map(entries)
            }
            Tok::Op(".") => {
                // Leading-dot qualified name: `.flow.Verdict.DROPPED`.
                let Some(Tok::Ident(id)) = self.toks.get(self.pos).cloned() else {
                    return Err("expected an identifier after '.'".into());
                };
                self.pos += 1;
                Expr::Ident(id)
            }
            t => return Err(format!("unexpected {t:?}")),
        })
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
fn resolve(e: Expr, scope: &mut Vec<String>) -> Result<Expr, String> {
    let r = |e: Expr, scope: &mut Vec<String>| resolve(e, scope).map(Box::new);
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
        Expr::Select(inner, f) => Expr::Select(r(*inner, scope)?, f),
        Expr::Index(a, b) => Expr::Index(r(*a, scope)?, r(*b, scope)?),
        Expr::List(items) => Expr::List(
            items
                .into_iter()
                .map(|x| resolve(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Map(entries) => Expr::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((resolve(k, scope)?, resolve(v, scope)?)))
                .collect::<Result<_, String>>()?,
        ),
        Expr::Not(a) => Expr::Not(r(*a, scope)?),
        Expr::Neg(a) => Expr::Neg(r(*a, scope)?),
        Expr::Bin(op, a, b) => Expr::Bin(op, r(*a, scope)?, r(*b, scope)?),
        Expr::Cond(c, a, b) => Expr::Cond(r(*c, scope)?, r(*a, scope)?, r(*b, scope)?),
        Expr::Call(None, name, mut args) if name == "has" => {
            if args.len() != 1 {
                return Err("has() takes one argument".into());
            }
            match args.pop() {
                Some(Expr::Select(inner, f)) => Expr::Has(r(*inner, scope)?, f),
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
            let target = r(*target, scope)?;
            scope.push(var.clone());
            let body = resolve(body, scope);
            scope.pop();
            Expr::Comp(kind, target, var, Box::new(body?))
        }
        Expr::Call(target, name, args) => {
            let target = target.map(|t| r(*t, scope)).transpose()?;
            let mut args: Vec<Expr> = args
                .into_iter()
                .map(|a| resolve(a, scope))
                .collect::<Result<_, _>>()?;
            // Precompile constant regexes.
            let pattern = match (&target, name.as_str(), args.as_slice()) {
                (Some(_), "matches", [Expr::Lit(Lit::Str(p))]) => Some(p.clone()),
                (None, "matches", [_, Expr::Lit(Lit::Str(p))]) => Some(p.clone()),
                _ => None,
            };
            if let Some(p) = pattern {
                let re = Regex::new(&p).map_err(|e| format!("invalid regex {p:?}: {e}"))?;
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

type Env<'a> = Vec<(String, Val<'a>)>;

fn eval<'a>(e: &'a Expr, env: &mut Env<'a>) -> Val<'a> {
    match e {
        Expr::Lit(l) => match l {
            Lit::Null => Val::Null,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(n) => Val::Int(*n),
            Lit::Uint(n) => Val::Uint(*n),
            Lit::Double(d) => Val::Double(*d),
            Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
        },
        Expr::Ident(id) => env
            .iter()
            .rev()
            .find(|(n, _)| n == id)
            .map_or(Val::Err, |(_, v)| v.clone()),
        Expr::Select(inner, f) => select(&eval(inner, env), f),
        Expr::Index(a, i) => {
            let (a, i) = (eval(a, env), eval(i, env));
            match (&a, &i) {
                (Val::List(l), _) => match as_num(&i) {
                    Some(n) if n >= 0.0 && (n as usize) < l.len() => l[n as usize].clone(),
                    _ => Val::Err,
                },
                (Val::Obj(_) | Val::Absent | Val::Map(_), Val::Str(k)) => select(&a, k),
                _ => Val::Err,
            }
        }
        Expr::List(items) => Val::List(items.iter().map(|x| eval(x, env)).collect()),
        Expr::Map(entries) => Val::Map(
            entries
                .iter()
                .map(|(k, v)| (eval(k, env), eval(v, env)))
                .collect(),
        ),
        Expr::Not(a) => match eval(a, env) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Err,
        },
        Expr::Neg(a) => match eval(a, env) {
            Val::Int(n) => n.checked_neg().map_or(Val::Err, Val::Int),
            Val::Double(d) => Val::Double(-d),
            _ => Val::Err,
        },
        Expr::Cond(c, a, b) => match eval(c, env) {
            Val::Bool(true) => eval(a, env),
            Val::Bool(false) => eval(b, env),
            _ => Val::Err,
        },
        Expr::Bin("&&", a, b) => match (eval(a, env), eval(b, env)) {
            (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
            (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
            _ => Val::Err,
        },
        Expr::Bin("||", a, b) => match (eval(a, env), eval(b, env)) {
            (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
            (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
            _ => Val::Err,
        },
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, env), eval(b, env));
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
                _ => arith(op, a, b),
            }
        }
        Expr::Has(inner, f) => match eval(inner, env) {
            Val::Obj(o) => Val::Bool(o.get(f).is_some_and(|v| !is_default(&from_json(v)))),
            Val::Absent => Val::Bool(false),
            Val::Map(m) => Val::Bool(m.iter().any(|(k, _)| matches!(k, Val::Str(s) if s == f))),
            _ => Val::Err,
        },
        Expr::Matches(subject, re) => {
            text(&eval(subject, env)).map_or(Val::Err, |s| Val::Bool(re.is_match(&s)))
        }
        Expr::Comp(kind, range, var, body) => {
            let items = match eval(range, env) {
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
                env.push((var.clone(), item.clone()));
                let r = eval(body, env);
                env.pop();
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
                vals.push(eval(t, env));
            }
            for a in args {
                vals.push(eval(a, env));
            }
            call(name, &vals)
        }
    }
}

fn call<'a>(name: &str, args: &[Val<'a>]) -> Val<'a> {
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
            (Some(s), Some(p)) => Regex::new(&p).map_or(Val::Err, |re| Val::Bool(re.is_match(&s))),
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
        Program::compile(src)
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
            assert!(Program::compile(bad).is_err(), "{bad:?} should fail");
        }
    }
}
