//! Host + path + method routing.
//!
//! Why by hand: route crates such as `matchit` match paths only; Fenfa needs host groups
//! (exact, wildcard, any), priorities, and a `405` that is decided per host group, with no
//! allocation per lookup.
//!
//! The router maps `(host, path, method)` to a route value `T`. It is built once from the
//! configuration by a [`RouterBuilder`], then frozen into an immutable [`Router`] that is
//! shared by every request (swap a whole new one in to reconfigure). It expects paths that
//! have already been through [`crate::path::normalize`]; it never rewrites or decodes them.
//!
//! # Path pattern syntax
//!
//! * A pattern starts with `/` and is a sequence of `/`-separated segments.
//! * A segment is either a literal (`users`) or a parameter `{name}` that takes the whole
//!   segment, with `name` matching `[A-Za-z_][A-Za-z0-9_]*`. A parameter matches exactly one
//!   non-empty segment. A name may appear only once per pattern.
//! * A final `/*` makes a prefix pattern: `/api/*` matches `/api`, `/api/` and anything below
//!   `/api/`, but not `/apix`. `/*` alone matches every path.
//! * Literals must already be in normalised form: no `.` or `..` segments, no `//` (an empty
//!   segment is allowed only as the last one, i.e. a trailing slash), percent-escapes only for
//!   reserved characters and with uppercase hex (`%C3%A9`, never `%7e` or `%2F`), ASCII only.
//!   `*`, `{` and `}` may not appear inside a literal.
//! * A trailing slash is significant: `/users/` and `/users` are different exact patterns.
//!
//! # Which route wins
//!
//! 1. **Host.** The exact host group is tried first, then wildcard groups from the longest
//!    suffix to the shortest, then the routes without hosts. The first group in which *some*
//!    route matches the path decides the answer, including a `405`: a less specific group is
//!    only consulted when the more specific one has no route for the path at all. The host is
//!    compared case-insensitively, a `:port` suffix and a trailing `.` are ignored.
//! 2. **Path, within the group.** A full match beats a prefix match. Among full matches, more
//!    literal segments win (an all-literal path is the best possible), then the one whose first
//!    differing segment is a literal rather than a parameter. Among prefix matches, more
//!    segments before `/*` win, ties again go to the literal at the first differing segment.
//! 3. **Equal specificity** (same pattern shape): higher `priority`, then insertion order.
//! 4. **Method.** The winner is the first candidate in that order whose method set contains
//!    the request's method. `HEAD` is served by a `GET` route, but a route that lists `HEAD`
//!    explicitly is preferred over a `GET` route of the same shape. If some route matched the
//!    path but none allows the method the answer is [`Lookup::MethodNotAllowed`].
//!
//! # Data structure, and why
//!
//! Each host group is a segment trie. A node has a hash map of literal children keyed by the
//! segment text, at most one parameter child, the routes that end at the node (full matches)
//! and the prefix routes whose `/*` starts at the node; route lists are kept sorted by
//! priority then insertion order. Host groups live in hash maps keyed by the host or by the
//! wildcard suffix (`.example.com`); a request host is looked up once exactly and once per
//! `.` it contains.
//!
//! A lookup walks the path's segments with plain slicing, trying the literal child before the
//! parameter child and backtracking only when the literal branch has no match. Its cost is
//! therefore bounded by the number of path segments (times the branching of parameters at the
//! same depth), not by the number of routes: 100 000 routes cost one more hash probe than 10.
//! It does not allocate; parameters are recovered after the winner is known, by zipping the
//! winning pattern with the path, into [`Params`], which stores up to four inline.

use std::fmt;
use std::str::FromStr;

use ahash::AHashMap;
use http::Method;

/// Longest request host (after stripping the port) that can match a host pattern.
const MAX_HOST_LEN: usize = 253;
/// Patterns deeper than this are rejected: it bounds the recursion of a lookup.
const MAX_SEGMENTS: usize = 128;
/// Parameters stored without a heap allocation.
const INLINE_PARAMS: usize = 4;

// ---------------------------------------------------------------------------------------------
// Host patterns
// ---------------------------------------------------------------------------------------------

/// The host part of a route: one exact host, or every subdomain of a suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A lowercase host name such as `api.example.com`.
    Exact(String),
    /// The suffix of `*.example.com`, leading dot included: `.example.com`. It matches
    /// `a.example.com` and `a.b.example.com`, but not `example.com` itself.
    Wildcard(String),
}

impl FromStr for HostPattern {
    type Err = String;

    /// Parses `api.example.com` or `*.example.com`, lowercasing it. An internationalised name
    /// (`政务.cn`) is turned into the ASCII form clients send in `Host` (`xn--zfr164b.cn`) by the
    /// `url` crate's IDNA processing; what Fenfa adds is its policy on the result: letters,
    /// digits, `-` and `.` only, DNS label and name lengths, a wildcard only as the whole
    /// leftmost label, no port.
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if lower.is_empty() {
            return Err("host pattern is empty".to_owned());
        }
        if lower == "*" {
            return Err(
                "host pattern '*' is not allowed; leave the host list empty to match any host"
                    .to_owned(),
            );
        }
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let invalid = |why: String| format!("invalid host pattern '{s}': {why}");
        if name.contains('*') {
            return Err(invalid(
                "'*' is only allowed as the whole leftmost label, as in '*.example.com'".into(),
            ));
        }
        if let Some((_, port)) = name.rsplit_once(':') {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "ports are not allowed (the request's port is ignored when routing)".into(),
                ));
            }
        }
        let ascii = if name.is_ascii() {
            name.to_owned()
        } else {
            match url::Host::parse(name) {
                Ok(url::Host::Domain(d)) => d,
                Ok(other) => return Err(invalid(format!("`{other}` is not a host name"))),
                Err(e) => return Err(invalid(format!("not an international domain name: {e}"))),
            }
        };
        if let Some(c) = ascii
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-'))
        {
            return Err(invalid(format!(
                "character {c:?} is not allowed; expected letters, digits, '.' and '-'"
            )));
        }
        if ascii.is_empty() || ascii.split('.').any(str::is_empty) {
            return Err(invalid(
                "empty label (a leading, trailing or doubled '.')".into(),
            ));
        }
        if ascii.len() > MAX_HOST_LEN - usize::from(wildcard) * 2 {
            return Err(invalid(format!("longer than {MAX_HOST_LEN} characters")));
        }
        if ascii.split('.').any(|label| label.len() > 63) {
            return Err(invalid("a label is longer than 63 characters".into()));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{ascii}"))
        } else {
            HostPattern::Exact(ascii)
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Path patterns
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
}

/// A parsed path pattern; see the [module documentation](self) for the syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    text: Box<str>,
    /// Segments before the `/*` of a prefix pattern, or all of them. The root pattern `/` is
    /// one empty literal segment, like the path `/`; `/*` has none.
    segments: Box<[Segment]>,
    prefix: bool,
    has_params: bool,
}

impl PathPattern {
    /// Whether the pattern ends in `/*`.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// For a prefix pattern, the text before the final `/*` (`/api/v1/*` → `/api/v1`, and
    /// `/*` → the empty string); for any other pattern, the whole pattern. It may contain
    /// `{name}` segments: use [`RouteMatch::prefix_len`] to know how much of a request path
    /// the prefix covered.
    pub fn literal_prefix(&self) -> &str {
        if self.prefix {
            self.text.strip_suffix("/*").unwrap_or_default()
        } else {
            &self.text
        }
    }

    /// Whether the pattern captures a `{name}` parameter.
    pub fn has_param(&self, name: &str) -> bool {
        self.param_names().any(|n| n == name)
    }

    /// The names of the pattern's `{name}` parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Param(name) => Some(&**name),
            Segment::Literal(_) => None,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for PathPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid path pattern '{s}': {why}");
        let Some(after_root) = s.strip_prefix('/') else {
            return Err(invalid("expected a pattern starting with '/'"));
        };
        let (body, prefix) = if after_root == "*" {
            (None, true)
        } else if let Some(body) = after_root.strip_suffix("/*") {
            (Some(body), true)
        } else {
            (Some(after_root), false)
        };

        let mut segments = Vec::new();
        let mut parts = body.map(|b| b.split('/')).into_iter().flatten().peekable();
        while let Some(part) = parts.next() {
            let last = parts.peek().is_none();
            if segments.len() >= MAX_SEGMENTS {
                return Err(invalid(&format!("more than {MAX_SEGMENTS} segments")));
            }
            if part.is_empty() {
                if last && !prefix {
                    segments.push(Segment::Literal("".into()));
                    continue;
                }
                return Err(invalid("empty segment ('//'); expected '/segment/segment'"));
            }
            if part.contains(['{', '}']) {
                let name = parse_param(part).map_err(|why| invalid(&why))?;
                if segments
                    .iter()
                    .any(|seg| matches!(seg, Segment::Param(other) if **other == *name))
                {
                    return Err(invalid(&format!(
                        "parameter '{{{name}}}' appears more than once"
                    )));
                }
                segments.push(Segment::Param(name.into()));
            } else {
                check_literal(part).map_err(|why| invalid(&why))?;
                segments.push(Segment::Literal(part.into()));
            }
        }

        let has_params = segments.iter().any(|seg| matches!(seg, Segment::Param(_)));
        Ok(PathPattern {
            text: s.into(),
            segments: segments.into_boxed_slice(),
            prefix,
            has_params,
        })
    }
}

/// `{name}` → `name`, checking the name.
fn parse_param(part: &str) -> Result<&str, String> {
    let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
        return Err(format!(
            "segment '{part}': '{{' and '}}' must enclose a whole segment, as in '/users/{{id}}'"
        ));
    };
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "parameter name '{name}' must match [A-Za-z_][A-Za-z0-9_]*"
        ))
    }
}

/// A literal segment must be something a normalised request path can contain.
fn check_literal(part: &str) -> Result<(), String> {
    if part.contains('*') {
        return Err(format!(
            "segment '{part}': '*' is only allowed as a final '/*' (prefix pattern)"
        ));
    }
    if part == "." || part == ".." {
        return Err(format!(
            "segment '{part}': '.' and '..' segments never reach the router; write the path without them"
        ));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !c.is_ascii() || matches!(c, ' ' | '?' | '#'))
    {
        return Err(format!(
            "segment '{part}': character {c:?} cannot appear in a request path; percent-encode it"
        ));
    }
    match crate::path::normalize(&format!("/{part}")) {
        Ok(std::borrow::Cow::Borrowed(_)) => Ok(()),
        Ok(std::borrow::Cow::Owned(normal)) => Err(format!(
            "segment '{part}' is not in normalised form; expected '{}'",
            normal.strip_prefix('/').unwrap_or(&normal)
        )),
        Err(e) => Err(format!("segment '{part}': {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------------------------

const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

fn standard_bit(method: &Method) -> Option<u16> {
    STANDARD_METHODS
        .iter()
        .position(|m| m == method)
        .map(|i| 1 << i)
}

#[derive(Debug, Clone)]
enum MethodSet {
    Any,
    Only {
        standard: u16,
        extension: Box<[Method]>,
    },
}

impl MethodSet {
    fn new(methods: Option<&[Method]>) -> Self {
        let Some(methods) = methods.filter(|m| !m.is_empty()) else {
            return MethodSet::Any;
        };
        let mut standard = 0;
        let mut extension = Vec::new();
        for method in methods {
            match standard_bit(method) {
                Some(bit) => standard |= bit,
                None if !extension.contains(method) => extension.push(method.clone()),
                None => {}
            }
        }
        MethodSet::Only {
            standard,
            extension: extension.into_boxed_slice(),
        }
    }

    fn contains(&self, method: &Method) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only {
                standard,
                extension,
            } => match standard_bit(method) {
                Some(bit) => standard & bit != 0,
                None => extension.contains(method),
            },
        }
    }

    fn overlaps(&self, other: &MethodSet) -> bool {
        match (self, other) {
            (MethodSet::Any, _) | (_, MethodSet::Any) => true,
            (
                MethodSet::Only {
                    standard: a,
                    extension: ax,
                },
                MethodSet::Only {
                    standard: b,
                    extension: bx,
                },
            ) => a & b != 0 || ax.iter().any(|m| bx.contains(m)),
        }
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodSet::Any => f.write_str("any method"),
            MethodSet::Only {
                standard,
                extension,
            } => {
                let names = STANDARD_METHODS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| standard & (1 << i) != 0)
                    .map(|(_, m)| m)
                    .chain(extension.iter());
                for (i, method) in names.enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(method.as_str())?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// The answer to [`Router::lookup`].
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// A route matched host, path and method.
    Found(RouteMatch<'a, T>),
    /// Some route matched the host and path, but none allows the method (`405`).
    MethodNotAllowed,
    /// No route matched the path (`404`).
    NotFound,
}

impl<'a, T> Lookup<'a, T> {
    /// The match, if any.
    pub fn found(self) -> Option<RouteMatch<'a, T>> {
        match self {
            Lookup::Found(m) => Some(m),
            _ => None,
        }
    }
}

/// A successful lookup.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// The value the route was added with.
    pub value: &'a T,
    /// The `{name}` segments, in pattern order.
    pub params: Params<'a>,
    /// Byte length of the request path covered by a prefix pattern's part before `/*` (what a
    /// strip-prefix rewrite removes: 7 for `/api/v1/*` on `/api/v1/users`, 0 for `/*`).
    /// For exact and template matches it is the whole path's length.
    pub prefix_len: usize,
}

/// The `{name}` segments captured by a match; the first four are stored inline.
#[derive(Debug, Clone, Default)]
pub struct Params<'a> {
    inline: [(&'a str, &'a str); INLINE_PARAMS],
    len: usize,
    spill: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn push(&mut self, name: &'a str, value: &'a str) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = (name, value);
                self.len += 1;
            }
            None => self.spill.push((name, value)),
        }
    }

    /// The value of the parameter `name`, as it appears in the (normalised) path.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|&(n, _)| n == name).map(|(_, v)| v)
    }

    /// `(name, value)` pairs in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.inline
            .get(..self.len)
            .unwrap_or_default()
            .iter()
            .chain(self.spill.iter())
            .copied()
    }

    /// Number of captured parameters.
    pub fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    /// Whether no parameter was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The same route was added twice: same host pattern, same path pattern, same priority and
/// at least one method in common, so the later one could never be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "route #{route} ({methods} {host} {path}, priority {priority}) duplicates route #{existing_route}: \
     same host, path and priority with overlapping methods; change the priority or the methods, or remove one"
)]
pub struct RouteConflict {
    /// 0-based insertion index the rejected route would have had.
    pub route: usize,
    /// 0-based insertion index of the route it collides with.
    pub existing_route: usize,
    /// The shared host pattern, or `any host`.
    pub host: String,
    /// The shared path pattern.
    pub path: String,
    /// The rejected route's methods, as text.
    pub methods: String,
    /// The shared priority.
    pub priority: i32,
}

// ---------------------------------------------------------------------------------------------
// Trie
// ---------------------------------------------------------------------------------------------

/// Index into the router's route table.
type RouteId = usize;

#[derive(Debug, Default)]
struct Node {
    literal: AHashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose pattern ends here, best first.
    full: Vec<RouteId>,
    /// Prefix routes whose `/*` starts here, best first.
    prefix: Vec<RouteId>,
}

impl Node {
    fn find(&self, pattern: &PathPattern) -> Option<&Node> {
        pattern
            .segments
            .iter()
            .try_fold(self, |node, segment| match segment {
                Segment::Literal(text) => node.literal.get(text),
                Segment::Param(_) => node.param.as_deref(),
            })
    }

    fn find_or_insert(&mut self, pattern: &PathPattern) -> &mut Node {
        pattern
            .segments
            .iter()
            .fold(self, |node, segment| match segment {
                Segment::Literal(text) => node.literal.entry(text.clone()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Box::default),
            })
    }

    fn entries(&self, prefix: bool) -> &[RouteId] {
        if prefix {
            &self.prefix
        } else {
            &self.full
        }
    }

    fn shrink(&mut self) {
        self.full.shrink_to_fit();
        self.prefix.shrink_to_fit();
        self.literal.shrink_to_fit();
        self.literal.values_mut().for_each(Node::shrink);
        if let Some(param) = &mut self.param {
            param.shrink();
        }
    }
}

#[derive(Debug)]
struct Route<T> {
    value: T,
    path: PathPattern,
    methods: MethodSet,
    priority: i32,
}

/// Host groups and their tries; shared by the builder and the frozen router.
#[derive(Debug)]
struct Table<T> {
    routes: Vec<Route<T>>,
    exact: AHashMap<Box<str>, Node>,
    wildcard: AHashMap<Box<str>, Node>,
    any: Node,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            routes: Vec::new(),
            exact: AHashMap::default(),
            wildcard: AHashMap::default(),
            any: Node::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Collects routes, rejecting exact duplicates, then [`build`](Self::build)s a [`Router`].
#[derive(Debug)]
pub struct RouterBuilder<T> {
    table: Table<T>,
}

impl<T> Default for RouterBuilder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RouterBuilder<T> {
    /// An empty builder.
    pub fn new() -> Self {
        RouterBuilder {
            table: Table::default(),
        }
    }

    /// Adds a route. `hosts` empty means any host; `methods` `None` (or empty) means any
    /// method. On conflict nothing is added.
    pub fn add(
        &mut self,
        hosts: &[HostPattern],
        path: &PathPattern,
        methods: Option<&[Method]>,
        priority: i32,
        value: T,
    ) -> Result<(), RouteConflict> {
        let methods = MethodSet::new(methods);
        let id = self.table.routes.len();
        let table = &mut self.table;

        // Check every host group first so that a conflict leaves the builder untouched.
        for host in unique_hosts(hosts) {
            let root = match host {
                Some(HostPattern::Exact(h)) => table.exact.get(h.as_str()),
                Some(HostPattern::Wildcard(s)) => table.wildcard.get(s.as_str()),
                None => Some(&table.any),
            };
            let Some(node) = root.and_then(|root| root.find(path)) else {
                continue;
            };
            let clash = node.entries(path.prefix).iter().find(|&&other| {
                table.routes.get(other).is_some_and(|r| {
                    r.path == *path && r.priority == priority && r.methods.overlaps(&methods)
                })
            });
            if let Some(&existing_route) = clash {
                return Err(RouteConflict {
                    route: id,
                    existing_route,
                    host: host.map_or_else(|| "any host".to_owned(), ToString::to_string),
                    path: path.as_str().to_owned(),
                    methods: methods.to_string(),
                    priority,
                });
            }
        }

        for host in unique_hosts(hosts) {
            let root = match host {
                Some(HostPattern::Exact(h)) => table.exact.entry(h.as_str().into()).or_default(),
                Some(HostPattern::Wildcard(s)) => {
                    table.wildcard.entry(s.as_str().into()).or_default()
                }
                None => &mut table.any,
            };
            let node = root.find_or_insert(path);
            let list = if path.prefix {
                &mut node.prefix
            } else {
                &mut node.full
            };
            // Sorted by priority, descending; equal priorities keep insertion order.
            let at = list.partition_point(|&other| {
                table
                    .routes
                    .get(other)
                    .is_some_and(|r| r.priority >= priority)
            });
            list.insert(at, id);
        }

        table.routes.push(Route {
            value,
            path: path.clone(),
            methods,
            priority,
        });
        Ok(())
    }

    /// Freezes the routes into a [`Router`].
    pub fn build(self) -> Router<T> {
        let mut table = self.table;
        table.routes.shrink_to_fit();
        table.any.shrink();
        for node in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            node.shrink();
        }
        Router { table }
    }
}

/// `hosts` without repeats, or a single `None` for "any host".
fn unique_hosts(hosts: &[HostPattern]) -> impl Iterator<Item = Option<&HostPattern>> {
    let any = hosts.is_empty().then_some(None);
    hosts
        .iter()
        .enumerate()
        .filter(|&(i, host)| !hosts.get(..i).unwrap_or_default().contains(host))
        .map(|(_, host)| Some(host))
        .chain(any)
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

/// An immutable routing table; see the [module documentation](self).
#[derive(Debug)]
pub struct Router<T> {
    table: Table<T>,
}

/// Best candidates seen so far while walking one host group's trie.
#[derive(Default)]
struct Search {
    /// `(literal segments, route)` of the best full match allowing the method.
    full: Option<(usize, RouteId)>,
    /// `(segments before /*, route, prefix_len)` of the best prefix match allowing the method.
    prefix: Option<(usize, RouteId, usize)>,
    /// Whether any route matched the path, whatever its methods.
    path_matched: bool,
}

impl<T> Router<T> {
    /// The same table with every route value replaced by `f(value)` (called once per stored
    /// value: a route with several paths is stored once per path). Lets a config be checked with
    /// route indexes as values and the proxy attach its own route objects afterwards.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Router<U> {
        let Table {
            routes,
            exact,
            wildcard,
            any,
        } = self.table;
        Router {
            table: Table {
                routes: routes
                    .into_iter()
                    .map(|r| Route {
                        value: f(r.value),
                        path: r.path,
                        methods: r.methods,
                        priority: r.priority,
                    })
                    .collect(),
                exact,
                wildcard,
                any,
            },
        }
    }

    /// Finds the route for a request. `path` should be the output of
    /// [`crate::path::normalize`]; a path that does not start with `/` is [`Lookup::NotFound`].
    /// `host` is the `Host` header or `:authority`, port included or not.
    pub fn lookup<'a>(
        &'a self,
        host: Option<&str>,
        path: &'a str,
        method: &Method,
    ) -> Lookup<'a, T> {
        if !path.starts_with('/') {
            return Lookup::NotFound;
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        let host = match host {
            Some(raw) => canonical_host(raw, &mut buf),
            None => None,
        };
        if let Some(host) = host {
            if let Some(root) = self.table.exact.get(host) {
                if let Some(answer) = self.lookup_group(root, path, method) {
                    return answer;
                }
            }
            if !self.table.wildcard.is_empty() {
                // Suffixes starting at each '.', longest first; at least one byte must precede
                // the suffix, so `*.example.com` does not match `example.com`.
                for (i, byte) in host.bytes().enumerate().skip(1) {
                    if byte != b'.' {
                        continue;
                    }
                    let root = host.get(i..).and_then(|s| self.table.wildcard.get(s));
                    if let Some(answer) = root.and_then(|r| self.lookup_group(r, path, method)) {
                        return answer;
                    }
                }
            }
        }
        self.lookup_group(&self.table.any, path, method)
            .unwrap_or(Lookup::NotFound)
    }

    /// Number of routes added.
    pub fn len(&self) -> usize {
        self.table.routes.len()
    }

    /// Whether the router has no routes.
    pub fn is_empty(&self) -> bool {
        self.table.routes.is_empty()
    }

    /// The answer within one host group, or `None` if no route there matches the path.
    fn lookup_group<'a>(
        &'a self,
        root: &Node,
        path: &'a str,
        method: &Method,
    ) -> Option<Lookup<'a, T>> {
        let mut search = Search::default();
        self.walk(root, path, 0, 0, 0, method, &mut search);
        let (route, prefix_len) = match (search.full, search.prefix) {
            (Some((_, route)), _) => (route, path.len()),
            (None, Some((_, route, prefix_len))) => (route, prefix_len),
            (None, None) if search.path_matched => return Some(Lookup::MethodNotAllowed),
            (None, None) => return None,
        };
        let route = self.table.routes.get(route)?;
        let mut params = Params::default();
        if route.path.has_params {
            let values = path.get(1..).unwrap_or_default().split('/');
            for (segment, value) in route.path.segments.iter().zip(values) {
                if let Segment::Param(name) = segment {
                    params.push(name, value);
                }
            }
        }
        Some(Lookup::Found(RouteMatch {
            value: &route.value,
            params,
            prefix_len,
        }))
    }

    /// Depth-first walk, literal child before parameter child, so that among candidates with
    /// the same score the first one seen is the one with a literal at the first difference.
    /// `pos` is the byte index of the `/` that starts the next segment, or `path.len()`.
    /// Returns `true` when an all-literal full match was found: nothing can beat it.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        node: &Node,
        path: &str,
        pos: usize,
        depth: usize,
        literals: usize,
        method: &Method,
        search: &mut Search,
    ) -> bool {
        if !node.prefix.is_empty() {
            search.path_matched = true;
            if let Some(route) = self.pick(&node.prefix, method) {
                if search.prefix.is_none_or(|(best, ..)| depth > best) {
                    search.prefix = Some((depth, route, pos));
                }
            }
        }
        let Some(rest) = path.get(pos + 1..) else {
            // No segment left: the path ends at this node.
            if !node.full.is_empty() {
                search.path_matched = true;
                if let Some(route) = self.pick(&node.full, method) {
                    if search.full.is_none_or(|(best, _)| literals > best) {
                        search.full = Some((literals, route));
                        return literals == depth;
                    }
                }
            }
            return false;
        };
        let segment_len = rest.find('/').unwrap_or(rest.len());
        let segment = rest.get(..segment_len).unwrap_or_default();
        let next = pos + 1 + segment_len;
        if !node.literal.is_empty() {
            if let Some(child) = node.literal.get(segment) {
                if self.walk(child, path, next, depth + 1, literals + 1, method, search) {
                    return true;
                }
            }
        }
        if let (Some(child), false) = (&node.param, segment.is_empty()) {
            if self.walk(child, path, next, depth + 1, literals, method, search) {
                return true;
            }
        }
        false
    }

    /// The first route of a sorted list that allows `method`. For `HEAD`, a route listing
    /// `HEAD` is preferred, then one allowing `GET`.
    fn pick(&self, candidates: &[RouteId], method: &Method) -> Option<RouteId> {
        let allows = |id: &RouteId, m: &Method| {
            self.table
                .routes
                .get(*id)
                .is_some_and(|r| r.methods.contains(m))
        };
        let found = candidates.iter().find(|id| allows(id, method));
        match found {
            None if *method == Method::HEAD => {
                candidates.iter().find(|id| allows(id, &Method::GET))
            }
            _ => found,
        }
        .copied()
    }
}

/// Lowercases `raw` (into `buf` if needed) and strips a `:port` and a trailing dot.
/// `None` if nothing is left or it is too long to match any host pattern.
fn canonical_host<'b>(raw: &'b str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let mut host = raw;
    if let Some((name, port)) = host.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            host = name;
        }
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(host);
    }
    let lower = buf.get_mut(..host.len())?;
    lower.copy_from_slice(host.as_bytes());
    lower.make_ascii_lowercase();
    std::str::from_utf8(lower).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostPattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn pat(s: &str) -> PathPattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `(hosts, pattern, methods, priority)` of a test route.
    type Spec<'a> = (&'a [&'a str], &'a str, Option<&'a [Method]>, i32);

    /// Builds a router whose values are the routes' indices.
    fn router(routes: &[Spec<'_>]) -> Router<usize> {
        let mut builder = RouterBuilder::new();
        for (i, &(hosts, path, methods, priority)) in routes.iter().enumerate() {
            let hosts: Vec<HostPattern> = hosts.iter().map(|h| host(h)).collect();
            builder
                .add(&hosts, &pat(path), methods, priority, i)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        builder.build()
    }

    /// Paths only, any host, any method, priority 0.
    fn paths(patterns: &[&str]) -> Router<usize> {
        let routes: Vec<_> = patterns.iter().map(|p| (&[][..], *p, None, 0)).collect();
        router(&routes)
    }

    fn get(router: &Router<usize>, host: Option<&str>, path: &str) -> Option<usize> {
        at(router, host, path, &Method::GET)
    }

    fn at(router: &Router<usize>, host: Option<&str>, path: &str, m: &Method) -> Option<usize> {
        router
            .lookup(host, path, m)
            .found()
            .map(|found| *found.value)
    }

    const ANY: &[&str] = &[];

    // --- path precedence -------------------------------------------------------------------

    #[test]
    fn exact_path_beats_longer_prefix() {
        let r = router(&[
            (ANY, "/api/v1/users/*", None, 100),
            (ANY, "/api/v1/users", None, 0),
        ]);
        assert_eq!(get(&r, None, "/api/v1/users"), Some(1));
        assert_eq!(get(&r, None, "/api/v1/users/7"), Some(0));
    }

    #[test]
    fn exact_literal_path_beats_template() {
        let r = paths(&["/users/{id}", "/users/me"]);
        assert_eq!(get(&r, None, "/users/me"), Some(1));
        assert_eq!(get(&r, None, "/users/42"), Some(0));
    }

    #[test]
    fn template_with_more_literal_segments_wins() {
        let r = paths(&["/x/{b}/{c}", "/{a}/b/c"]);
        assert_eq!(get(&r, None, "/x/b/c"), Some(1));
        assert_eq!(get(&r, None, "/x/y/z"), Some(0));
    }

    #[test]
    fn literal_beats_param_at_earliest_differing_segment() {
        let r = paths(&["/{a}/b/c", "/x/{b}/c"]);
        assert_eq!(get(&r, None, "/x/b/c"), Some(1));
        assert_eq!(get(&r, None, "/y/b/c"), Some(0));
    }

    #[test]
    fn template_beats_prefix() {
        let r = paths(&["/*", "/users/*", "/users/{id}"]);
        assert_eq!(get(&r, None, "/users/42"), Some(2));
        assert_eq!(get(&r, None, "/users/42/posts"), Some(1));
        assert_eq!(get(&r, None, "/other"), Some(0));
    }

    #[test]
    fn longer_prefix_wins() {
        let r = paths(&["/api/*", "/api/v1/*"]);
        assert_eq!(get(&r, None, "/api/v1/x"), Some(1));
        assert_eq!(get(&r, None, "/api/v1"), Some(1));
        assert_eq!(get(&r, None, "/api/v2/x"), Some(0));
    }

    #[test]
    fn longer_prefix_with_param_beats_shorter_literal_prefix() {
        let r = paths(&["/acme/*", "/{tenant}/api/*"]);
        assert_eq!(get(&r, None, "/acme/api/x"), Some(1));
        assert_eq!(get(&r, None, "/acme/web/x"), Some(0));
    }

    #[test]
    fn prefix_matches_its_root_with_and_without_trailing_slash_and_below() {
        let r = paths(&["/api/*"]);
        for path in ["/api", "/api/", "/api/anything/below"] {
            assert_eq!(get(&r, None, path), Some(0), "{path}");
        }
    }

    #[test]
    fn prefix_does_not_match_sibling_with_same_chars() {
        let r = paths(&["/api/*"]);
        assert_eq!(get(&r, None, "/apix"), None);
        assert_eq!(get(&r, None, "/apix/y"), None);
        assert!(matches!(
            r.lookup(None, "/apix", &Method::GET),
            Lookup::NotFound
        ));
    }

    #[test]
    fn catch_all_matches_every_path() {
        let r = paths(&["/*"]);
        for path in ["/", "/a", "/a/b/c/", "/%C3%A9"] {
            let found = r.lookup(None, path, &Method::GET).found();
            assert_eq!(
                found.map(|m| (*m.value, m.prefix_len)),
                Some((0, 0)),
                "{path}"
            );
        }
    }

    #[test]
    fn prefix_len_is_the_length_of_the_matched_prefix() {
        let r = paths(&["/api/v1/*", "/t/{tenant}/*", "/exact/{id}"]);
        let len = |path: &str| {
            r.lookup(None, path, &Method::GET)
                .found()
                .map(|m| m.prefix_len)
        };
        assert_eq!(len("/api/v1/users"), Some(7));
        assert_eq!(len("/api/v1"), Some(7));
        assert_eq!(len("/api/v1/"), Some(7));
        assert_eq!(len("/t/acme/x"), Some(7));
        assert_eq!(len("/exact/12"), Some(9));
    }

    #[test]
    fn backtracks_from_literal_branch_to_param_branch() {
        let r = paths(&["/a/b/c", "/a/{x}/d"]);
        assert_eq!(get(&r, None, "/a/b/d"), Some(1));
        assert_eq!(get(&r, None, "/a/b/c"), Some(0));
    }

    #[test]
    fn trailing_slash_is_significant_for_full_matches() {
        let r = paths(&["/users", "/users/{id}/"]);
        assert_eq!(get(&r, None, "/users"), Some(0));
        assert_eq!(get(&r, None, "/users/"), None);
        assert_eq!(get(&r, None, "/users/7/"), Some(1));
        assert_eq!(get(&r, None, "/users/7"), None);
    }

    #[test]
    fn root_pattern_matches_only_root() {
        let r = paths(&["/"]);
        assert_eq!(get(&r, None, "/"), Some(0));
        assert_eq!(get(&r, None, "/a"), None);
    }

    #[test]
    fn param_does_not_match_an_empty_segment() {
        let r = paths(&["/users/{id}"]);
        assert_eq!(get(&r, None, "/users/"), None);
    }

    #[test]
    fn path_without_leading_slash_is_not_found() {
        let r = paths(&["/*"]);
        assert!(matches!(
            r.lookup(None, "a", &Method::GET),
            Lookup::NotFound
        ));
        assert!(matches!(r.lookup(None, "", &Method::GET), Lookup::NotFound));
    }

    // --- priority and insertion order ------------------------------------------------------

    #[test]
    fn higher_priority_wins_among_equally_specific_routes() {
        let r = router(&[(ANY, "/a/{x}", None, 1), (ANY, "/a/{y}", None, 5)]);
        assert_eq!(get(&r, None, "/a/b"), Some(1));
    }

    #[test]
    fn insertion_order_breaks_priority_ties() {
        let r = paths(&["/a/{x}", "/a/{y}"]);
        assert_eq!(get(&r, None, "/a/b"), Some(0));
    }

    #[test]
    fn priority_does_not_override_specificity() {
        let r = router(&[(ANY, "/a/{x}", None, 1000), (ANY, "/a/b", None, -5)]);
        assert_eq!(get(&r, None, "/a/b"), Some(1));
    }

    // --- methods ---------------------------------------------------------------------------

    #[test]
    fn method_mismatch_gives_method_not_allowed() {
        let r = router(&[(ANY, "/a", Some(&[Method::GET]), 0)]);
        assert!(matches!(
            r.lookup(None, "/a", &Method::POST),
            Lookup::MethodNotAllowed
        ));
        assert!(matches!(
            r.lookup(None, "/b", &Method::POST),
            Lookup::NotFound
        ));
    }

    #[test]
    fn method_mismatch_falls_through_to_less_specific_path() {
        let r = router(&[
            (ANY, "/users/me", Some(&[Method::GET]), 0),
            (ANY, "/users/{id}", Some(&[Method::DELETE]), 0),
            (ANY, "/users/*", Some(&[Method::PUT]), 0),
        ]);
        assert_eq!(at(&r, None, "/users/me", &Method::GET), Some(0));
        assert_eq!(at(&r, None, "/users/me", &Method::DELETE), Some(1));
        assert_eq!(at(&r, None, "/users/me", &Method::PUT), Some(2));
        assert!(matches!(
            r.lookup(None, "/users/me", &Method::POST),
            Lookup::MethodNotAllowed
        ));
    }

    #[test]
    fn method_falls_through_to_lower_priority_route_of_same_shape() {
        let r = router(&[
            (ANY, "/a", Some(&[Method::GET]), 10),
            (ANY, "/a", Some(&[Method::POST]), 0),
        ]);
        assert_eq!(at(&r, None, "/a", &Method::POST), Some(1));
    }

    #[test]
    fn head_matches_get_route() {
        let r = router(&[(ANY, "/a", Some(&[Method::GET]), 0)]);
        assert_eq!(at(&r, None, "/a", &Method::HEAD), Some(0));
    }

    #[test]
    fn explicit_head_route_beats_get_route_for_head() {
        let r = router(&[
            (ANY, "/a", Some(&[Method::GET]), 10),
            (ANY, "/a", Some(&[Method::HEAD]), 0),
        ]);
        assert_eq!(at(&r, None, "/a", &Method::HEAD), Some(1));
        assert_eq!(at(&r, None, "/a", &Method::GET), Some(0));
    }

    #[test]
    fn extension_methods_are_matched() {
        let purge = Method::from_bytes(b"PURGE").unwrap_or_else(|e| panic!("{e}"));
        let r = router(&[(ANY, "/cache/*", Some(std::slice::from_ref(&purge)), 0)]);
        assert_eq!(at(&r, None, "/cache/x", &purge), Some(0));
        assert!(matches!(
            r.lookup(None, "/cache/x", &Method::GET),
            Lookup::MethodNotAllowed
        ));
    }

    #[test]
    fn empty_method_list_means_any_method() {
        let r = router(&[(ANY, "/a", Some(&[]), 0)]);
        assert_eq!(at(&r, None, "/a", &Method::PATCH), Some(0));
    }

    // --- hosts -----------------------------------------------------------------------------

    #[test]
    fn wildcard_host_loses_to_exact_host() {
        let r = router(&[
            (&["*.example.com"], "/a", None, 100),
            (&["api.example.com"], "/a", None, 0),
        ]);
        assert_eq!(get(&r, Some("api.example.com"), "/a"), Some(1));
        assert_eq!(get(&r, Some("www.example.com"), "/a"), Some(0));
    }

    #[test]
    fn longer_wildcard_suffix_beats_shorter() {
        let r = router(&[
            (&["*.example.com"], "/a", None, 0),
            (&["*.eu.example.com"], "/a", None, 0),
        ]);
        assert_eq!(get(&r, Some("x.eu.example.com"), "/a"), Some(1));
        assert_eq!(get(&r, Some("x.us.example.com"), "/a"), Some(0));
    }

    #[test]
    fn specific_host_beats_any_host() {
        let r = router(&[(ANY, "/a", None, 100), (&["*.example.com"], "/a", None, 0)]);
        assert_eq!(get(&r, Some("x.example.com"), "/a"), Some(1));
        assert_eq!(get(&r, Some("other.org"), "/a"), Some(0));
    }

    #[test]
    fn host_specificity_beats_path_specificity() {
        let r = router(&[
            (ANY, "/a/b", None, 0),
            (&["api.example.com"], "/*", None, 0),
        ]);
        assert_eq!(get(&r, Some("api.example.com"), "/a/b"), Some(1));
    }

    #[test]
    fn falls_back_to_less_specific_host_when_no_path_matches() {
        let r = router(&[
            (&["api.example.com"], "/only-here", None, 0),
            (&["*.example.com"], "/wild", None, 0),
            (ANY, "/anywhere", None, 0),
        ]);
        assert_eq!(get(&r, Some("api.example.com"), "/only-here"), Some(0));
        assert_eq!(get(&r, Some("api.example.com"), "/wild"), Some(1));
        assert_eq!(get(&r, Some("api.example.com"), "/anywhere"), Some(2));
        assert_eq!(get(&r, Some("api.example.com"), "/nowhere"), None);
    }

    #[test]
    fn method_mismatch_in_specific_host_does_not_fall_back() {
        let r = router(&[
            (&["api.example.com"], "/a", Some(&[Method::GET]), 0),
            (ANY, "/a", Some(&[Method::POST]), 0),
        ]);
        assert!(matches!(
            r.lookup(Some("api.example.com"), "/a", &Method::POST),
            Lookup::MethodNotAllowed
        ));
        assert_eq!(at(&r, Some("other.org"), "/a", &Method::POST), Some(1));
    }

    #[test]
    fn port_in_host_is_ignored() {
        let r = router(&[(&["api.example.com"], "/a", None, 0)]);
        assert_eq!(get(&r, Some("api.example.com:8443"), "/a"), Some(0));
        assert_eq!(get(&r, Some("api.example.com:"), "/a"), Some(0));
    }

    #[test]
    fn host_is_compared_case_insensitively() {
        let r = router(&[
            (&["API.Example.com"], "/a", None, 0),
            (&["*.Shop.IO"], "/b", None, 0),
        ]);
        assert_eq!(get(&r, Some("Api.EXAMPLE.com"), "/a"), Some(0));
        assert_eq!(get(&r, Some("WWW.shop.io:80"), "/b"), Some(1));
    }

    #[test]
    fn trailing_dot_in_host_is_ignored() {
        let r = router(&[(&["api.example.com"], "/a", None, 0)]);
        assert_eq!(get(&r, Some("api.example.com."), "/a"), Some(0));
    }

    #[test]
    fn wildcard_matches_any_depth_of_subdomain_but_not_the_apex() {
        let r = router(&[(&["*.example.com"], "/a", None, 0)]);
        assert_eq!(get(&r, Some("a.example.com"), "/a"), Some(0));
        assert_eq!(get(&r, Some("a.b.example.com"), "/a"), Some(0));
        assert_eq!(get(&r, Some("example.com"), "/a"), None);
        assert_eq!(get(&r, Some(".example.com"), "/a"), None);
        assert_eq!(get(&r, Some("badexample.com"), "/a"), None);
    }

    #[test]
    fn missing_host_uses_only_any_host_routes() {
        let r = router(&[(&["api.example.com"], "/a", None, 0), (ANY, "/b", None, 0)]);
        assert_eq!(get(&r, None, "/a"), None);
        assert_eq!(get(&r, None, "/b"), Some(1));
    }

    #[test]
    fn route_with_several_hosts_matches_each() {
        let r = router(&[(&["a.com", "*.b.com", "a.com"], "/x", None, 0)]);
        assert_eq!(get(&r, Some("a.com"), "/x"), Some(0));
        assert_eq!(get(&r, Some("w.b.com"), "/x"), Some(0));
        assert_eq!(get(&r, Some("c.com"), "/x"), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn overlong_request_host_falls_back_to_any_host() {
        let r = router(&[(ANY, "/a", None, 0)]);
        let long = "a".repeat(10_000);
        assert_eq!(get(&r, Some(&long), "/a"), Some(0));
        let upper = "A".repeat(MAX_HOST_LEN);
        assert_eq!(get(&r, Some(&upper), "/a"), Some(0));
    }

    // --- params ----------------------------------------------------------------------------

    #[test]
    fn params_are_captured() {
        let r = paths(&["/users/{id}/posts/{post_id}"]);
        let found = r
            .lookup(None, "/users/42/posts/%C3%A9", &Method::GET)
            .found();
        let params = found.map(|m| m.params).unwrap_or_default();
        assert_eq!(params.get("id"), Some("42"));
        assert_eq!(params.get("post_id"), Some("%C3%A9"));
        assert_eq!(params.get("nope"), None);
        let all: Vec<_> = params.iter().collect();
        assert_eq!(all, [("id", "42"), ("post_id", "%C3%A9")]);
    }

    #[test]
    fn params_of_prefix_patterns_are_captured() {
        let r = paths(&["/t/{tenant}/*"]);
        let found = r.lookup(None, "/t/acme/a/b", &Method::GET).found();
        assert_eq!(found.and_then(|m| m.params.get("tenant")), Some("acme"));
    }

    #[test]
    fn more_than_four_params_are_captured() {
        let r = paths(&["/{a}/{b}/{c}/{d}/{e}/{f}"]);
        let found = r.lookup(None, "/1/2/3/4/5/6", &Method::GET).found();
        let params = found.map(|m| m.params).unwrap_or_default();
        assert_eq!(params.len(), 6);
        assert_eq!(params.get("e"), Some("5"));
        let values: Vec<_> = params.iter().map(|(_, v)| v).collect();
        assert_eq!(values, ["1", "2", "3", "4", "5", "6"]);
    }

    #[test]
    fn params_use_the_winning_routes_names() {
        let r = router(&[(ANY, "/a/{x}", None, 0), (ANY, "/a/{y}", None, 1)]);
        let found = r.lookup(None, "/a/b", &Method::GET).found();
        let params = found.map(|m| m.params).unwrap_or_default();
        assert_eq!((params.get("x"), params.get("y")), (None, Some("b")));
    }

    // --- conflicts -------------------------------------------------------------------------

    fn add(
        b: &mut RouterBuilder<usize>,
        hosts: &[&str],
        path: &str,
        methods: Option<&[Method]>,
        priority: i32,
    ) -> Result<(), RouteConflict> {
        let hosts: Vec<_> = hosts.iter().map(|h| host(h)).collect();
        let value = b.table.routes.len();
        b.add(&hosts, &pat(path), methods, priority, value)
    }

    #[test]
    fn duplicate_route_is_a_conflict() {
        let mut b = RouterBuilder::new();
        assert!(add(
            &mut b,
            ANY,
            "/a/{id}",
            Some(&[Method::GET, Method::POST]),
            3
        )
        .is_ok());
        let err = add(&mut b, ANY, "/a/{id}", Some(&[Method::POST]), 3);
        let err = err.err().unwrap_or_else(|| panic!("expected a conflict"));
        assert_eq!((err.route, err.existing_route), (1, 0));
        let message = err.to_string();
        assert!(
            message.contains("/a/{id}") && message.contains("any host"),
            "{message}"
        );
    }

    #[test]
    fn any_method_overlaps_every_method() {
        let mut b = RouterBuilder::new();
        assert!(add(&mut b, ANY, "/a", Some(&[Method::GET]), 0).is_ok());
        assert!(add(&mut b, ANY, "/a", None, 0).is_err());
    }

    #[test]
    fn same_route_with_other_priority_methods_host_or_kind_is_not_a_conflict() {
        let mut b = RouterBuilder::new();
        assert!(add(&mut b, ANY, "/a", Some(&[Method::GET]), 0).is_ok());
        assert!(add(&mut b, ANY, "/a", Some(&[Method::GET]), 1).is_ok());
        assert!(add(&mut b, ANY, "/a", Some(&[Method::POST]), 0).is_ok());
        assert!(add(&mut b, ANY, "/a", Some(&[Method::HEAD]), 0).is_ok());
        assert!(add(&mut b, &["a.com"], "/a", Some(&[Method::GET]), 0).is_ok());
        assert!(add(&mut b, ANY, "/a/*", Some(&[Method::GET]), 0).is_ok());
        assert!(add(&mut b, ANY, "/{x}", Some(&[Method::GET]), 0).is_ok());
        assert!(add(&mut b, ANY, "/{y}", Some(&[Method::GET]), 0).is_ok());
        assert_eq!(b.build().len(), 8);
    }

    #[test]
    fn conflict_on_one_host_adds_the_route_nowhere() {
        let mut b = RouterBuilder::new();
        assert!(add(&mut b, &["b.com"], "/a", None, 0).is_ok());
        let err = add(&mut b, &["a.com", "*.x.com", "b.com"], "/a", None, 0);
        assert_eq!(err.map_err(|e| e.host), Err("b.com".to_owned()));
        let r = b.build();
        assert_eq!(r.len(), 1);
        assert_eq!(get(&r, Some("a.com"), "/a"), None);
        assert_eq!(get(&r, Some("w.x.com"), "/a"), None);
    }

    // --- parsing ---------------------------------------------------------------------------

    #[test]
    fn host_patterns_parse() {
        assert_eq!(
            host("API.Example.com"),
            HostPattern::Exact("api.example.com".into())
        );
        assert_eq!(
            host("*.Example.com"),
            HostPattern::Wildcard(".example.com".into())
        );
        assert_eq!(host("localhost"), HostPattern::Exact("localhost".into()));
        assert_eq!(host("*.example.com").to_string(), "*.example.com");
        // International names become the ASCII form clients send in `Host`.
        assert_eq!(host("政务.cn"), HostPattern::Exact("xn--zfr164b.cn".into()));
        assert_eq!(
            host("*.É.com"),
            HostPattern::Wildcard(".xn--9ca.com".into())
        );
    }

    #[test]
    fn invalid_host_patterns_are_rejected_with_a_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("*", "leave the host list empty"),
            ("*.", "empty label"),
            ("a.*.b", "leftmost label"),
            ("*a.com", "leftmost label"),
            ("*.*.a.com", "leftmost label"),
            ("api.example.com:8080", "ports are not allowed"),
            ("a_b.com", "'_'"),
            ("a b", "' '"),
            ("[::1]", "'['"),
            ("a\u{200B}_b.com", "'_'"),
            ("a\u{0085}.com", "not an international domain name"),
            ("a..com", "empty label"),
            (".a.com", "empty label"),
            ("a.com.", "empty label"),
        ] {
            match input.parse::<HostPattern>() {
                Ok(p) => panic!("{input:?} parsed as {p:?}"),
                Err(e) => assert!(e.contains(reason), "{input:?}: {e}"),
            }
        }
        assert!(format!("{}.com", "a".repeat(64))
            .parse::<HostPattern>()
            .is_err());
    }

    #[test]
    fn path_patterns_parse() {
        let p = pat("/api/v1/*");
        assert!(p.is_prefix());
        assert_eq!((p.literal_prefix(), p.as_str()), ("/api/v1", "/api/v1/*"));
        let p = pat("/*");
        assert!(p.is_prefix());
        assert_eq!(p.literal_prefix(), "");
        let p = pat("/users/{id}/posts/{post}");
        assert!(!p.is_prefix());
        assert_eq!(p.literal_prefix(), "/users/{id}/posts/{post}");
        assert!(p.has_param("post") && !p.has_param("posts"));
        assert_eq!(p.param_names().collect::<Vec<_>>(), ["id", "post"]);
        for ok in [
            "/",
            "/a/",
            "/a/b",
            "/{x}",
            "/{_x1}/b/",
            "/caf%C3%A9",
            "/a:b@c",
            "/.well-known/x",
        ] {
            assert!(ok.parse::<PathPattern>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_path_patterns_are_rejected_with_a_reason() {
        for (input, reason) in [
            ("", "starting with '/'"),
            ("api/*", "starting with '/'"),
            ("//a", "empty segment"),
            ("/a//b", "empty segment"),
            ("/a//*", "empty segment"),
            ("/a/./b", "'.' and '..'"),
            ("/a/..", "'.' and '..'"),
            ("/a/*/b", "'*' is only allowed"),
            ("/a*", "'*' is only allowed"),
            ("/*/*", "'*' is only allowed"),
            ("/a/{id", "whole segment"),
            ("/a/x{id}", "whole segment"),
            ("/a/{}", "parameter name"),
            ("/a/{1x}", "parameter name"),
            ("/a/{x-y}", "parameter name"),
            ("/{id}/{id}", "appears more than once"),
            ("/a%2Fb", "encoded slash"),
            ("/%7euser", "expected '~user'"),
            ("/caf%c3%a9", "expected 'caf%C3%A9'"),
            ("/a%zz", "percent-encoding"),
            ("/a\\b", "backslash"),
            ("/café", "percent-encode"),
            ("/a b", "percent-encode"),
            ("/a?b", "percent-encode"),
        ] {
            match input.parse::<PathPattern>() {
                Ok(p) => panic!("{input:?} parsed as {p:?}"),
                Err(e) => assert!(e.contains(reason), "{input:?}: {e}"),
            }
        }
        let deep = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(deep.parse::<PathPattern>().is_err());
    }

    // --- scale -----------------------------------------------------------------------------

    fn assert_send_sync<X: Send + Sync>() {}

    #[test]
    fn router_is_send_and_sync() {
        assert_send_sync::<Router<String>>();
        assert_send_sync::<RouterBuilder<String>>();
    }

    fn big_router(services: usize) -> Router<(usize, &'static str)> {
        let mut b = RouterBuilder::new();
        for i in 0..services {
            let items = pat(&format!("/svc{i}/items/{{id}}"));
            let statics = pat(&format!("/svc{i}/static/*"));
            let r1 = b.add(&[], &items, None, 0, (i, "items"));
            let r2 = b.add(&[], &statics, Some(&[Method::GET]), 0, (i, "static"));
            assert!(r1.is_ok() && r2.is_ok());
        }
        b.build()
    }

    #[test]
    fn hundred_thousand_routes_resolve_correctly() {
        let r = big_router(50_000);
        assert_eq!(r.len(), 100_000);
        let found = r
            .lookup(Some("x.com"), "/svc31337/items/abc", &Method::GET)
            .found();
        let (value, id) = found
            .map(|m| (*m.value, m.params.get("id")))
            .unwrap_or_default();
        assert_eq!((value, id), ((31337, "items"), Some("abc")));
        let found = r
            .lookup(None, "/svc49999/static/css/app.css", &Method::GET)
            .found();
        assert_eq!(
            found.map(|m| (*m.value, m.prefix_len)),
            Some(((49999, "static"), 16))
        );
        let found = r.lookup(None, "/svc0/static", &Method::HEAD).found();
        assert_eq!(found.map(|m| *m.value), Some((0, "static")));
        assert!(matches!(
            r.lookup(None, "/svc7/static/x", &Method::POST),
            Lookup::MethodNotAllowed
        ));
        assert!(matches!(
            r.lookup(None, "/svc50000/items/1", &Method::GET),
            Lookup::NotFound
        ));
        assert!(matches!(
            r.lookup(None, "/svc1/items", &Method::GET),
            Lookup::NotFound
        ));
    }
    // Lookup time against route count is measured in `benches/benches/router.rs`
    // (`cargo bench -p fenfa-benches --bench router`), not asserted in a test.
}
