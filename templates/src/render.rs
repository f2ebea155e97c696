//! Substituting `${DECLOUD_*}` variables into user-data at deploy time.
//!
//! In `#cloud-config` user-data each occurrence is escaped for the YAML scalar it
//! stands in: inside a double-quoted scalar `\`, `"` and non-printable characters
//! become escapes, inside a single-quoted one `'` is doubled; plain and block scalars
//! have no escapes, so a value is placed there only if it cannot change the YAML
//! structure (no line break, no `: ` or ` #`, no leading indicator), otherwise
//! rendering fails and the template should quote the variable. A variable that is a
//! whole plain scalar is single-quoted when YAML 1.1 or 1.2 would not read its value
//! back as that exact string (`0e0`, `123`, `on`, `- x`). The result is parsed
//! again before it is returned. In `#!` script user-data values are inserted as they
//! are: their formats ([`crate::Vars`]) exclude every shell metacharacter that could
//! end a quoted word.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::{Bundle, RenderError, Variable, Vars};

/// `${DECLOUD_…}` with any name; unknown names are errors, not left alone.
pub(crate) static VARIABLE_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{(DECLOUD_[A-Za-z0-9_]*)\}").expect("valid regex"));

/// User-data with every variable substituted, ready for a NoCloud seed.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedUserData {
    text: String,
}

impl RenderedUserData {
    /// The user-data text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The user-data text, owned.
    pub fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Debug for RenderedUserData {
    /// Rendered user-data holds the VM's password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedUserData")
            .field("len", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// Substitutes `vars` into the bundle's user-data.
pub fn render(bundle: &Bundle, vars: &Vars) -> Result<RenderedUserData, RenderError> {
    let text = substitute(&bundle.user_data, |variable| vars.get(variable))?;
    Ok(RenderedUserData { text })
}

/// Where in the user-data a variable stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// A `#!` script: no YAML.
    Script,
    /// An unquoted YAML scalar; `at_start` when the variable begins the scalar.
    Plain { at_start: bool, in_flow: bool },
    /// Inside `'…'`.
    SingleQuoted,
    /// Inside `"…"`.
    DoubleQuoted,
    /// Inside a `|` or `>` block scalar.
    Block,
    /// Inside a YAML comment.
    Comment,
}

impl Context {
    fn describe(self) -> &'static str {
        match self {
            Self::Script => "script",
            Self::Plain { .. } => "plain scalar",
            Self::SingleQuoted => "single-quoted scalar",
            Self::DoubleQuoted => "double-quoted scalar",
            Self::Block => "block scalar",
            Self::Comment => "comment",
        }
    }
}

pub(crate) fn is_cloud_config(text: &str) -> bool {
    text.lines()
        .next()
        .is_some_and(|l| l.trim_end() == "#cloud-config")
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Substitutes every `${DECLOUD_*}` using `lookup`, escaping per context.
pub(crate) fn substitute<'v>(
    text: &str,
    lookup: impl Fn(Variable) -> Option<&'v str>,
) -> Result<String, RenderError> {
    let yaml = is_cloud_config(text);
    let contexts = if yaml {
        yaml_contexts(text)
    } else {
        Vec::new()
    };
    let mut out = String::with_capacity(text.len() + 256);
    let mut last = 0;
    for found in VARIABLE_REF.captures_iter(text) {
        let whole = found.get(0).expect("group 0 always matches");
        let name = &found[1];
        let line = line_of(text, whole.start());
        let variable = Variable::from_name(name).ok_or_else(|| RenderError::UnknownVariable {
            name: name.to_owned(),
            line,
        })?;
        let value = lookup(variable).ok_or(RenderError::MissingValue {
            name: variable.name(),
            line,
        })?;
        let context = if yaml {
            contexts
                .iter()
                .find(|(offset, _)| *offset == whole.start())
                .map(|(_, c)| *c)
                .unwrap_or(Context::Plain {
                    at_start: true,
                    in_flow: true,
                })
        } else {
            Context::Script
        };
        // A value that is the whole plain scalar but that YAML would read as a number, boolean
        // or null (`0e0`, `123`, `on`, `-1`) goes in single quotes: the same string, unambiguous.
        let quoted = matches!(
            context,
            Context::Plain { at_start: true, in_flow }
                if ends_plain_scalar(&text[whole.end()..], in_flow) && !plainly_a_string(value)
        );
        let context = if quoted {
            Context::SingleQuoted
        } else {
            context
        };
        let escaped = escape(value, context).ok_or(RenderError::UnsafeValue {
            name: variable.name(),
            line,
            context: context.describe(),
        })?;
        let quote = if quoted { "'" } else { "" };
        out.push_str(&text[last..whole.start()]);
        out.push_str(quote);
        out.push_str(&escaped);
        out.push_str(quote);
        last = whole.end();
    }
    out.push_str(&text[last..]);
    if yaml {
        serde_yaml::from_str::<serde_yaml::Value>(&out)
            .map_err(|e| RenderError::InvalidYaml(e.to_string()))?;
    }
    Ok(out)
}

/// Whether `rest`, the text right after a variable reference, starts by ending the plain
/// scalar the reference is in: end of line, a comment, or in a flow collection its separator.
fn ends_plain_scalar(rest: &str, in_flow: bool) -> bool {
    let line = rest.split('\n').next().unwrap_or("");
    line.trim_end().is_empty()
        || line.starts_with(" #")
        || (in_flow && line.trim_start().starts_with([',', ']', '}']))
}

/// Whether `value`, as a whole plain scalar, is a string both to YAML 1.2 and to the YAML 1.1
/// that cloud-init's parser speaks (where `yes`, `on` and `0x1f` are not strings). Errs on the
/// side of "no": quoting a string that needed none changes nothing.
fn plainly_a_string(value: &str) -> bool {
    const YAML_1_1_WORDS: [&str; 12] = [
        "y", "yes", "n", "no", "on", "off", "true", "false", "null", "~", ".inf", ".nan",
    ];
    let lower = value.to_ascii_lowercase();
    !value.is_empty()
        && !value.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
        && !YAML_1_1_WORDS.contains(&lower.as_str())
        && matches!(
            serde_yaml::from_str::<serde_yaml::Value>(value),
            Ok(serde_yaml::Value::String(read)) if read == value
        )
}

/// YAML's printable characters (YAML 1.2 §5.1) less line breaks; tab allowed.
fn printable_inline(c: char) -> bool {
    matches!(c, '\t' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// The text to insert for `value` in `context`, or `None` when it cannot be placed
/// there without changing the document's structure.
pub(crate) fn escape(value: &str, context: Context) -> Option<String> {
    match context {
        Context::Script => Some(value.to_owned()),
        Context::DoubleQuoted => {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if printable_inline(c) => out.push(c),
                    c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push_str(&format!("\\U{:08x}", c as u32)),
                }
            }
            Some(out)
        }
        Context::SingleQuoted => value
            .chars()
            .all(printable_inline)
            .then(|| value.replace('\'', "''")),
        // A leading space would shift a block's detected indentation.
        Context::Block | Context::Comment => (value.chars().all(printable_inline)
            && !value.starts_with([' ', '\t']))
        .then(|| value.to_owned()),
        Context::Plain { at_start, in_flow } => {
            let first = value.chars().next();
            let breaks_structure = value.chars().any(|c| !printable_inline(c) || c == '\t')
                || value.contains(": ")
                || value.ends_with(':')
                || value.contains(" #")
                || value.trim() != value
                || (in_flow && value.contains([',', '[', ']', '{', '}', ':']))
                || (at_start && first.is_some_and(|c| "-?:,[]{}#&*!|>'\"%@`".contains(c)));
            let safe = !breaks_structure;
            safe.then(|| value.to_owned())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

/// Finds the YAML context of every `${DECLOUD_*}` in a cloud-config document: a small
/// scanner for the block and flow styles cloud-config uses (mappings, sequences,
/// plain, quoted and block scalars, comments, flow collections).
pub(crate) fn yaml_contexts(text: &str) -> Vec<(usize, Context)> {
    let mut found = Vec::new();
    let mut block_parent: Option<usize> = None;
    let mut quote: Option<Quote> = None;
    let mut flow_depth = 0usize;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let base = line_start;
        line_start += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let indent = content.len() - content.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if content.trim().is_empty() || indent > parent {
                for m in VARIABLE_REF.find_iter(content) {
                    found.push((base + m.start(), Context::Block));
                }
                continue;
            }
            block_parent = None;
        }
        let bytes = content.as_bytes();
        let mut i = 0;
        let mut expect_scalar = quote.is_none();
        let mut plain_start: Option<usize> = None;
        // Only `$` can start a variable reference; checking there also keeps slicing on
        // character boundaries.
        let variable_at = |i: usize| {
            (bytes[i] == b'$')
                .then(|| VARIABLE_REF.find(&content[i..]))
                .flatten()
                .filter(|m| m.start() == 0)
        };
        while i < bytes.len() {
            if let Some(q) = quote {
                match (q, bytes[i]) {
                    (Quote::Double, b'\\') => i += 1,
                    (Quote::Double, b'"') => quote = None,
                    (Quote::Single, b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    (Quote::Single, b'\'') => quote = None,
                    _ => {
                        if variable_at(i).is_some() {
                            let context = match q {
                                Quote::Single => Context::SingleQuoted,
                                Quote::Double => Context::DoubleQuoted,
                            };
                            found.push((base + i, context));
                        }
                    }
                }
                i += 1;
                continue;
            }
            let c = bytes[i];
            let at_variable = variable_at(i);
            if let Some(start) = plain_start {
                // Inside a plain scalar: look for its end.
                if let Some(m) = at_variable {
                    found.push((
                        base + i,
                        Context::Plain {
                            at_start: start == i,
                            in_flow: flow_depth > 0,
                        },
                    ));
                    i += m.end();
                    continue;
                }
                let next = bytes.get(i + 1).copied();
                if c == b':' && next.is_none_or(|n| n == b' ') {
                    plain_start = None;
                    expect_scalar = true;
                } else if c == b' ' && next == Some(b'#') {
                    plain_start = None;
                } else if flow_depth > 0 && matches!(c, b',' | b']' | b'}') {
                    plain_start = None;
                    continue;
                }
                i += 1;
                continue;
            }
            match c {
                b' ' | b'\t' => {}
                b'#' => {
                    for m in VARIABLE_REF.find_iter(&content[i..]) {
                        found.push((base + i + m.start(), Context::Comment));
                    }
                    break;
                }
                b'"' if expect_scalar => {
                    quote = Some(Quote::Double);
                    expect_scalar = false;
                }
                b'\'' if expect_scalar => {
                    quote = Some(Quote::Single);
                    expect_scalar = false;
                }
                b'|' | b'>' if expect_scalar => {
                    block_parent = Some(indent);
                    // The rest of the line is only the header and maybe a comment.
                    break;
                }
                b'-' | b'?' if expect_scalar && bytes.get(i + 1).is_none_or(|&n| n == b' ') => {}
                b'[' | b'{' => {
                    flow_depth += 1;
                    expect_scalar = true;
                }
                b']' | b'}' => {
                    flow_depth = flow_depth.saturating_sub(1);
                    expect_scalar = false;
                }
                b',' if flow_depth > 0 => expect_scalar = true,
                b':' if bytes.get(i + 1).is_none_or(|&n| n == b' ') => expect_scalar = true,
                b'&' | b'!' if expect_scalar => {
                    // Anchor or tag: skip the token, a scalar may follow.
                    while i < bytes.len() && bytes[i] != b' ' {
                        i += 1;
                    }
                    continue;
                }
                _ => {
                    plain_start = Some(i);
                    expect_scalar = false;
                    continue;
                }
            }
            i += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn contexts_of(text: &str) -> Vec<Context> {
        yaml_contexts(text).into_iter().map(|(_, c)| c).collect()
    }

    #[test]
    fn contexts_are_recognised() {
        let text = "#cloud-config\n\
            a: ${DECLOUD_VM_ID}\n\
            b: \"x ${DECLOUD_VM_ID}\"\n\
            c: 'it''s ${DECLOUD_VM_ID}'\n\
            d: |\n  line ${DECLOUD_VM_ID}\n\n  more\n\
            e: [${DECLOUD_VM_ID}, b]\n\
            f: x # ${DECLOUD_VM_ID}\n\
            runcmd:\n  - echo \"hi ${DECLOUD_VM_ID}\"\n  - - echo\n    - ${DECLOUD_VM_ID}\n";
        assert_eq!(
            contexts_of(text),
            vec![
                Context::Plain {
                    at_start: true,
                    in_flow: false
                },
                Context::DoubleQuoted,
                Context::SingleQuoted,
                Context::Block,
                Context::Plain {
                    at_start: true,
                    in_flow: true
                },
                Context::Comment,
                Context::Plain {
                    at_start: false,
                    in_flow: false
                },
                Context::Plain {
                    at_start: true,
                    in_flow: false
                },
            ]
        );
    }

    #[test]
    fn multi_line_double_quotes_are_followed() {
        let text = "#cloud-config\na: \"one\n  ${DECLOUD_VM_ID} two\"\nb: ${DECLOUD_VM_ID}\n";
        assert_eq!(
            contexts_of(text),
            vec![
                Context::DoubleQuoted,
                Context::Plain {
                    at_start: true,
                    in_flow: false
                }
            ]
        );
    }

    #[test]
    fn unsafe_plain_values_are_refused_not_mangled() {
        // Inside a longer plain scalar a value cannot be quoted: one that would change the
        // document's structure is refused.
        let text = "#cloud-config\na: x${DECLOUD_VM_ID}\n";
        for bad in ["x: y", "x #y", "a\nb: c", "y "] {
            assert!(
                matches!(
                    substitute(text, |_| Some(bad)),
                    Err(RenderError::UnsafeValue { .. })
                ),
                "{bad:?}"
            );
        }
        // As the whole scalar it is quoted and keeps its exact value; a line break still cannot
        // be placed in a single-line scalar.
        let text = "#cloud-config\na: ${DECLOUD_VM_ID}\n";
        for value in ["x: y", "x #y", "- x", "*ref", " lead", "'q'"] {
            let out = substitute(text, |_| Some(value)).unwrap();
            assert_eq!(parse(&out)["a"].as_str(), Some(value), "{out}");
        }
        assert!(matches!(
            substitute(text, |_| Some("a\nb: c")),
            Err(RenderError::UnsafeValue { .. })
        ));
    }

    #[test]
    fn whole_plain_values_that_yaml_would_retype_are_quoted() {
        for value in [
            "0e0", "123", "0x1f", "on", "No", "null", "~", "-1", ".5", "true",
        ] {
            let text =
                "#cloud-config\nhostname: ${DECLOUD_HOSTNAME}\nlist: [${DECLOUD_HOSTNAME}, b]\n";
            let out = substitute(text, |_| Some(value)).unwrap();
            let doc = parse(&out);
            assert_eq!(doc["hostname"].as_str(), Some(value), "{out}");
            assert_eq!(doc["list"][0].as_str(), Some(value), "{out}");
        }
        // Part of a longer scalar, or an ordinary string: left as it is.
        let text =
            "#cloud-config\nfqdn: ${DECLOUD_HOSTNAME}.example\nhostname: ${DECLOUD_HOSTNAME}\n";
        assert_eq!(
            substitute(text, |_| Some("web-1")).unwrap(),
            "#cloud-config\nfqdn: web-1.example\nhostname: web-1\n"
        );
    }

    #[test]
    fn unknown_and_missing_variables_fail() {
        assert_eq!(
            substitute("#!/bin/sh\necho ${DECLOUD_NOPE}\n", |_| Some("x")),
            Err(RenderError::UnknownVariable {
                name: "DECLOUD_NOPE".into(),
                line: 2
            })
        );
        assert_eq!(
            substitute("#!/bin/sh\necho ${DECLOUD_SSH_KEY}\n", |_| None),
            Err(RenderError::MissingValue {
                name: "DECLOUD_SSH_KEY",
                line: 2
            })
        );
        // Other shell variables are not ours to touch.
        assert_eq!(
            substitute("#!/bin/sh\necho ${HOME}\n", |_| None).unwrap(),
            "#!/bin/sh\necho ${HOME}\n"
        );
    }

    #[test]
    fn render_uses_vars() {
        let bundle = crate::bundle::tests::sample();
        let vars = crate::vars::tests::sample();
        let rendered = render(&bundle, &vars).unwrap();
        assert_eq!(parse(rendered.as_str())["hostname"], "web-1");
        assert!(!format!("{rendered:?}").contains("web-1"));
    }

    proptest! {
        #[test]
        fn quoted_contexts_carry_any_value(value in "[^\\p{C}\u{2028}\u{2029}]*") {
            let text = "#cloud-config\na: \"${DECLOUD_VM_ID}\"\nb: 'x${DECLOUD_VM_ID}'\nc:\n  - \"pre ${DECLOUD_VM_ID} post\"\n";
            let out = substitute(text, |_| Some(value.as_str())).unwrap();
            let doc = parse(&out);
            prop_assert_eq!(doc["a"].as_str().unwrap(), value.as_str());
            prop_assert_eq!(doc["b"].as_str().unwrap(), format!("x{value}"));
            prop_assert_eq!(doc["c"][0].as_str().unwrap(), format!("pre {value} post"));
        }

        #[test]
        fn double_quotes_carry_control_characters(value in proptest::collection::vec(any::<char>(), 0..20)) {
            let value: String = value.into_iter().collect();
            let text = "#cloud-config\na: \"${DECLOUD_VM_ID}\"\n";
            let out = substitute(text, |_| Some(value.as_str())).unwrap();
            // YAML normalises nothing inside double quotes once escaped.
            let doc = parse(&out);
            prop_assert_eq!(doc["a"].as_str().unwrap(), value.as_str());
        }

        #[test]
        fn plain_and_block_contexts_either_keep_the_value_or_refuse(value in "[ -~]{0,30}") {
            let text = "#cloud-config\na: x${DECLOUD_VM_ID}\nb: |\n  v${DECLOUD_VM_ID}\nc: [\"q\", x${DECLOUD_VM_ID}]\n";
            match substitute(text, |_| Some(value.as_str())) {
                Ok(out) => {
                    let doc = parse(&out);
                    let plain = format!("x{value}");
                    prop_assert_eq!(doc["a"].as_str().map(str::to_owned), Some(plain.trim_end().to_owned()));
                    prop_assert_eq!(doc["b"].as_str().unwrap(), format!("v{value}\n"));
                    prop_assert_eq!(doc["c"][1].as_str().map(str::to_owned), Some(plain.trim_end().to_owned()));
                }
                Err(e) => prop_assert!(matches!(e, RenderError::UnsafeValue { .. }), "{e}"),
            }
        }
    }
}
