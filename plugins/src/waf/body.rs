//! Request bodies: which content types are inspected and how each is split into values.
//!
//! - `application/x-www-form-urlencoded`: each field name and value (`form:NAME`);
//! - `application/json` and `*+json`: every string and every object key, with its JSON path
//!   (`body:$.user.name`, `body:$.items[0].note`); a body that is not valid JSON is inspected
//!   as text;
//! - `multipart/form-data`: text parts (no file name, or a `text/*` or JSON type) as `form:NAME`;
//!   for file parts only the file name (traversal in `../../x.php`);
//! - XML (`*/xml`, `*+xml`: WeChat Pay notifications, SOAP): every text node, CDATA section and
//!   attribute value, and markup declarations (`<!ENTITY … SYSTEM …>` is how XXE starts), each
//!   as a value (`body`), so the document's own tags are not taken for injected markup;
//! - binary types (`image/*`, `audio/*`, `video/*`, `font/*`, `application/octet-stream`, PDF,
//!   archives, protobuf) are not inspected;
//! - anything else (`text/plain`, no type at all) is inspected as one text value (`body`), or
//!   walked as JSON when it is a JSON document (SDKs that post JSON as `text/plain`).

/// How a request's body is to be read, decided from its `Content-Type` in the request phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
    Xml,
    /// With its boundary.
    Multipart(String),
    Text,
    /// Not inspected.
    Binary,
}

impl BodyKind {
    pub fn from_content_type(ct: Option<&str>) -> BodyKind {
        let Some(ct) = ct else {
            return BodyKind::Text;
        };
        let mut parts = ct.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence.ends_with("/xml") || essence.ends_with("+xml") {
            return BodyKind::Xml;
        }
        match essence.as_str() {
            "application/x-www-form-urlencoded" => BodyKind::Form,
            "application/json" | "text/json" => BodyKind::Json,
            e if e.ends_with("+json") => BodyKind::Json,
            "multipart/form-data" | "multipart/mixed" => {
                let boundary = parts.find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("boundary")
                        .then(|| v.trim().trim_matches('"').to_owned())
                });
                match boundary {
                    Some(b) if !b.is_empty() && b.len() <= 200 => BodyKind::Multipart(b),
                    // A multipart body we cannot split is still read as text.
                    _ => BodyKind::Text,
                }
            }
            e if e.starts_with("image/")
                || e.starts_with("audio/")
                || e.starts_with("video/")
                || e.starts_with("font/")
                || matches!(
                    e,
                    "application/octet-stream"
                        | "application/pdf"
                        | "application/zip"
                        | "application/gzip"
                        | "application/x-gzip"
                        | "application/x-tar"
                        | "application/x-7z-compressed"
                        | "application/vnd.rar"
                        | "application/protobuf"
                        | "application/x-protobuf"
                        | "application/grpc"
                        | "application/msgpack"
                        | "application/cbor"
                ) =>
            {
                BodyKind::Binary
            }
            _ => BodyKind::Text,
        }
    }
}

/// The values of an XML document: text nodes, CDATA sections, attribute values and markup
/// declarations (`<!DOCTYPE …>`, `<!ENTITY …>`), in document order. Comments and processing
/// instructions are skipped. Not a validating parser: anything malformed is returned as text.
pub fn xml_values(doc: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find('<') {
        let text = rest.get(..i).unwrap_or_default();
        if !text.trim().is_empty() {
            out.push(text);
        }
        let at = rest.get(i..).unwrap_or_default();
        let (value, used) = if let Some(cdata) = at.strip_prefix("<![CDATA[") {
            match cdata.find("]]>") {
                Some(e) => (cdata.get(..e), 9 + e + 3),
                None => (Some(cdata), at.len()),
            }
        } else if at.starts_with("<!--") {
            match at.find("-->") {
                Some(e) => (None, e + 3),
                None => (None, at.len()),
            }
        } else {
            let end = at.find('>').map_or(at.len(), |e| e + 1);
            let tag = at.get(..end).unwrap_or_default();
            if tag.starts_with("<!") {
                (Some(tag), end)
            } else if tag.starts_with("<?") {
                (None, end)
            } else {
                attribute_values(tag, &mut out);
                (None, end)
            }
        };
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            out.push(v);
        }
        rest = at.get(used..).unwrap_or_default();
    }
    if !rest.trim().is_empty() {
        out.push(rest);
    }
    out
}

/// Pushes the quoted attribute values of one start tag (`<a href="…" title='…'>`).
fn attribute_values<'a>(tag: &'a str, out: &mut Vec<&'a str>) {
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let after = rest.get(eq + 1..).unwrap_or_default().trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            rest = after;
            continue;
        };
        let inner = after.get(1..).unwrap_or_default();
        let end = inner.find(q).unwrap_or(inner.len());
        let value = inner.get(..end).unwrap_or_default();
        if !value.is_empty() {
            out.push(value);
        }
        rest = inner.get(end + 1..).unwrap_or_default();
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    /// Whether the content is text to inspect (no file name, or a text or JSON type).
    pub is_text: bool,
    pub content: &'a [u8],
}

/// Splits a multipart body into its parts. Malformed parts are skipped; what is left after the
/// last complete part is ignored (the caller inspects the whole body as text if no part was
/// found).
pub fn multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut parts = Vec::new();
    let mut positions = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(body.get(i..).unwrap_or_default(), d) {
        positions.push(i + pos);
        i += pos + d.len();
    }
    for w in positions.windows(2) {
        let (Some(&start), Some(&end)) = (w.first(), w.get(1)) else {
            continue;
        };
        let Some(chunk) = body.get(start + d.len()..end) else {
            continue;
        };
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let Some(split) = find(chunk, b"\r\n\r\n") else {
            continue;
        };
        let (Some(head), Some(content)) = (chunk.get(..split), chunk.get(split + 4..)) else {
            continue;
        };
        let Ok(head) = std::str::from_utf8(head) else {
            continue;
        };
        let mut name = None;
        let mut filename = None;
        let mut ctype = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = param(v, "name");
                filename = param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                ctype = Some(v.trim());
            }
        }
        let is_text = match ctype {
            None => filename.is_none(),
            Some(t) => {
                let t = t.to_ascii_lowercase();
                t.starts_with("text/") || t.contains("json") || t.contains("xml")
            }
        };
        parts.push(Part {
            name: name.unwrap_or(""),
            filename,
            is_text,
            content,
        });
    }
    parts
}

/// The value of `key="…"` (or unquoted) in a `Content-Disposition` header value.
fn param<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"'))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            BodyKind::from_content_type(Some("application/x-www-form-urlencoded; charset=UTF-8")),
            BodyKind::Form
        );
        assert_eq!(
            BodyKind::from_content_type(Some("Application/JSON")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/problem+json")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("multipart/form-data; boundary=\"abc\"")),
            BodyKind::Multipart("abc".into())
        );
        assert_eq!(
            BodyKind::from_content_type(Some("image/png")),
            BodyKind::Binary
        );
        assert_eq!(BodyKind::from_content_type(Some("text/xml")), BodyKind::Xml);
        assert_eq!(
            BodyKind::from_content_type(Some("application/soap+xml")),
            BodyKind::Xml
        );
        assert_eq!(
            BodyKind::from_content_type(Some("text/plain")),
            BodyKind::Text
        );
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Text);
    }

    #[test]
    fn xml_values_are_text_cdata_attributes_and_declarations() {
        let doc = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>\
<xml><appid><![CDATA[wx2421b1c4370ec43b]]></appid><!-- note --><a href='https://x'>O'Brien</a>\
<total_fee>1</total_fee></xml>";
        assert_eq!(
            xml_values(doc),
            [
                "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">",
                "]>",
                "wx2421b1c4370ec43b",
                "https://x",
                "O'Brien",
                "1"
            ]
        );
        assert_eq!(xml_values("no markup"), ["no markup"]);
        assert_eq!(xml_values("<a><![CDATA[open"), ["open"]);
    }

    #[test]
    fn multipart_parts() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../a.php\"\r\n\
Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--XyZ--\r\n";
        let parts = multipart(body, "XyZ");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "title");
        assert!(parts[0].is_text);
        assert_eq!(parts[0].content, b"hello");
        assert_eq!(parts[1].filename, Some("../../a.php"));
        assert!(!parts[1].is_text);
        assert!(multipart(b"garbage", "XyZ").is_empty());
    }
}
