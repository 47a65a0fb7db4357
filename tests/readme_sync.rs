//! Keeps `README.md` and its Simplified Chinese translation `README.zh-CN.md` in step.
//!
//! The prose is translated, so it cannot be compared; everything a reader copies or follows can:
//! the heading structure, the code blocks (byte for byte), the flags, setting keys and metric
//! names in backticks, the tables' shape and first columns, the link targets, and the in-page
//! anchors (each must resolve in its own file). Both files are read with pulldown-cmark, as
//! GitHub renders them (CommonMark with tables). When one README is edited without the other,
//! these tests fail and say which file to bring in line; the `detects_*` tests show each check
//! failing on two small documents that differ in one thing.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use regex::Regex;
use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

const EN_NAME: &str = "README.md";
const ZH_NAME: &str = "README.zh-CN.md";

#[derive(Default)]
struct Cell {
    text: String,
    code: Vec<String>,
}

#[derive(Default)]
struct Table {
    /// Header first; every row as wide as the header, as GitHub shows it.
    rows: Vec<Vec<Cell>>,
    /// The rows (counting the header as 1) written narrower or wider than the header.
    misshapen: Vec<usize>,
}

struct Link {
    target: String,
    text: String,
    /// Above the first `##` section, where the switch to the other language belongs.
    at_top: bool,
}

/// The parts of a README that must agree between the languages.
#[derive(Default)]
struct Doc {
    name: &'static str,
    /// (level, rendered text) of every heading.
    headings: Vec<(usize, String)>,
    /// Every code block, fence lines included, exactly as written.
    code_blocks: Vec<String>,
    /// The contents of every code span, in tables and headings too.
    code_spans: Vec<String>,
    tables: Vec<Table>,
    links: Vec<Link>,
    /// All raw HTML, for explicit `<a id>` anchors.
    html: String,
}

fn parse(name: &'static str, text: &str) -> Doc {
    let mut doc = Doc {
        name,
        ..Doc::default()
    };
    let mut heading: Option<(usize, String)> = None;
    // Links are a stack: an image can be the text of a link.
    let (mut links, mut cell, mut row) = (Vec::<Link>::new(), None::<Cell>, Vec::new());
    for (event, range) in Parser::new_ext(text, Options::ENABLE_TABLES).into_offset_iter() {
        let inline = match &event {
            Event::Text(s) | Event::Code(s) => &**s,
            Event::SoftBreak | Event::HardBreak => " ",
            _ => "",
        };
        let open = heading.iter_mut().map(|h| &mut h.1);
        let open = open.chain(links.iter_mut().map(|l| &mut l.text));
        let open = open.chain(cell.iter_mut().map(|c| &mut c.text));
        open.for_each(|s| s.push_str(inline));
        match event {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level as usize, "".into())),
            Event::End(TagEnd::Heading(_)) => doc.headings.extend(heading.take()),
            Event::Start(Tag::CodeBlock(_)) => doc.code_blocks.push(text[range].to_string()),
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                let mut headings = doc.headings.iter().chain(&heading);
                links.push(Link {
                    target: dest_url.to_string(),
                    text: String::new(),
                    at_top: !headings.any(|h| h.0 >= 2),
                });
            }
            Event::End(TagEnd::Link | TagEnd::Image) => doc.links.extend(links.pop()),
            Event::Start(Tag::Table(_)) => doc.tables.push(Table::default()),
            Event::Start(Tag::TableCell) => cell = Some(Cell::default()),
            Event::End(TagEnd::TableCell) => row.extend(cell.take().map(|c| (range, c))),
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => {
                let table = doc.tables.last_mut().expect("rows are in tables");
                // GitHub pads a short row with empty cells (an empty range at the row's end)
                // and drops the cells of a long one (text left after the last cell).
                let padded = row
                    .iter()
                    .any(|(r, _)| r.is_empty() && r.start == range.end);
                let after = row.last().map_or(range.end, |(r, _)| r.end);
                let cut = text[after..range.end].contains(|c: char| c != '|' && !c.is_whitespace());
                if padded || cut {
                    table.misshapen.push(table.rows.len() + 1);
                }
                table.rows.push(row.drain(..).map(|(_, c)| c).collect());
            }
            Event::Code(code) => {
                cell.iter_mut().for_each(|c| c.code.push(code.to_string()));
                doc.code_spans.push(code.to_string());
            }
            Event::Html(html) | Event::InlineHtml(html) => doc.html.push_str(&html),
            _ => {}
        }
    }
    doc
}

const BOTH: &str = "edit README.zh-CN.md to follow README.md, or README.md to follow \
                    README.zh-CN.md, whichever is behind";

fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    ok.then_some(()).ok_or_else(message)
}

/// Fails with a message naming what only one README has, and which README to update.
fn same_set(what: &str, en: BTreeSet<String>, zh: BTreeSet<String>) -> Result<(), String> {
    let mut problems = String::new();
    for (a, b, doc, other) in [(&en, &zh, EN_NAME, ZH_NAME), (&zh, &en, ZH_NAME, EN_NAME)] {
        let only: Vec<&String> = a.difference(b).collect();
        if !only.is_empty() {
            problems += &format!(
                "\n  in {doc} but missing from {other}: {only:?}\n    -> add them to {other} \
                 (where they sit in {doc}), or remove them from {doc} if they are stale"
            );
        }
    }
    ensure(problems.is_empty(), || {
        format!("{EN_NAME} and {ZH_NAME} disagree on {what}:{problems}")
    })
}

fn language_switches(en: &Doc, zh: &Doc) -> Result<(), String> {
    for (doc, text, target) in [(en, "简体中文", ZH_NAME), (zh, "English", EN_NAME)] {
        let is_switch = |l: &Link| l.at_top && l.text == text && l.target == target;
        ensure(doc.links.iter().any(is_switch), || {
            format!(
                "{0} must link to the other language with `[{text}]({target})` right under its \
                 title (before the first `##` section); update {0}",
                doc.name
            )
        })?;
    }
    Ok(())
}

fn heading_levels(en: &Doc, zh: &Doc) -> Result<(), String> {
    let levels = |d: &Doc| d.headings.iter().map(|h| h.0).collect::<Vec<_>>();
    let (a, b) = (levels(en), levels(zh));
    let i = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let outline = |d: &Doc| {
        let lines = d
            .headings
            .iter()
            .map(|(l, t)| format!("\n    {} {t}", "#".repeat(*l)));
        lines.collect::<String>()
    };
    let (na, nb, n, ha, hb) = (
        a.len(),
        b.len(),
        i + 1,
        en.headings.get(i),
        zh.headings.get(i),
    );
    let (oa, ob) = (outline(en), outline(zh));
    ensure(a == b, || {
        format!(
            "{EN_NAME} ({na} headings) and {ZH_NAME} ({nb} headings) have different heading \
             structure, first differing at heading #{n} ({EN_NAME}: {ha:?}, {ZH_NAME}: {hb:?}); \
             {BOTH}.\n  {EN_NAME}:{oa}\n  {ZH_NAME}:{ob}"
        )
    })
}

fn code_blocks(en: &Doc, zh: &Doc) -> Result<(), String> {
    let (a, b) = (&en.code_blocks, &zh.code_blocks);
    for (i, (x, y)) in a.iter().zip(b).enumerate().map(|(i, xy)| (i + 1, xy)) {
        ensure(x == y, || {
            format!(
                "code block #{i} differs between the READMEs (code blocks are copied byte for \
                 byte, never translated); {BOTH}.\n--- {EN_NAME}:\n{x}\n--- {ZH_NAME}:\n{y}"
            )
        })?;
    }
    let (na, nb) = (a.len(), b.len());
    let (longer, extra) = if na > nb {
        (EN_NAME, &a[nb..])
    } else {
        (ZH_NAME, &b[na..])
    };
    ensure(extra.is_empty(), || {
        let extra = extra.join("\n---\n");
        format!("{EN_NAME} has {na} code blocks, {ZH_NAME} has {nb}; {BOTH}. Only in {longer}:\n{extra}")
    })
}

/// Every match of `pattern`'s group 1 in the code spans of `doc`.
fn in_code_spans(doc: &Doc, pattern: &Regex) -> BTreeSet<String> {
    let matches = |s: &String| {
        pattern
            .captures_iter(s)
            .map(|c| c[1].to_string())
            .collect::<Vec<_>>()
    };
    doc.code_spans.iter().flat_map(matches).collect()
}

fn flags(en: &Doc, zh: &Doc) -> Result<(), String> {
    static FLAG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?:^|[^\w-])(--[A-Za-z][A-Za-z0-9-]*)").unwrap());
    let (a, b) = (in_code_spans(en, &FLAG), in_code_spans(zh, &FLAG));
    ensure(!a.is_empty(), || format!("no `--flag`s found in {EN_NAME}"))?;
    same_set("the `--flags` in backticks", a, b)
}

fn metric_names(en: &Doc, zh: &Doc) -> Result<(), String> {
    static METRIC: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b(hubferry_[A-Za-z0-9_]*)").unwrap());
    let (a, b) = (in_code_spans(en, &METRIC), in_code_spans(zh, &METRIC));
    ensure(!a.is_empty(), || {
        format!("no `hubferry_*` metrics in {EN_NAME}")
    })?;
    same_set("the `hubferry_*` metric names", a, b)
}

/// The code spans in the first cell of each body row of a table.
fn first_column(table: &Table) -> Vec<Vec<String>> {
    let first = |row: &Vec<Cell>| row.first().map(|c| c.code.clone()).unwrap_or_default();
    table.rows.iter().skip(1).map(first).collect()
}

fn settings_keys(en: &Doc, zh: &Doc) -> Result<(), String> {
    // The settings table is the one whose rows name `HUBFERRY_*` environment variables.
    let names_variables = |t: &&Table| {
        let mut code = t.rows.iter().skip(1).flatten().flat_map(|c| &c.code);
        code.any(|code| code.starts_with("HUBFERRY_"))
    };
    let keys = |d: &Doc| {
        let table = d.tables.iter().find(names_variables);
        let keys = table.map(|t| first_column(t).iter().map(|c| c.join(" ")).collect());
        keys.ok_or_else(|| {
            format!(
                "{} has no settings table (a table whose rows name `HUBFERRY_*` variables); \
                 restore it from the other README",
                d.name
            )
        })
    };
    let (a, b): (Vec<String>, Vec<String>) = (keys(en)?, keys(zh)?);
    ensure(!a.is_empty(), || {
        format!("no setting keys found in {EN_NAME}")
    })?;
    let set = |keys: &Vec<String>| keys.iter().cloned().collect();
    same_set(
        "the setting keys in the settings table's first column",
        set(&a),
        set(&b),
    )?;
    ensure(a == b, || {
        format!(
            "the settings tables list the same keys in a different order; {BOTH}.\n  \
             {EN_NAME}: {a:?}\n  {ZH_NAME}: {b:?}"
        )
    })
}

fn tables(en: &Doc, zh: &Doc) -> Result<(), String> {
    for doc in [en, zh] {
        for (i, rows) in doc.tables.iter().map(|t| &t.misshapen).enumerate() {
            ensure(rows.is_empty(), || {
                format!(
                    "{0}, table #{1}: rows {rows:?} (the header is row 1) have more or fewer \
                     cells than the header, and GitHub pads or cuts them; fix them in {0} (a `|` \
                     in a cell is written `\\|`)",
                    doc.name,
                    i + 1
                )
            })?;
        }
    }
    let shape = |d: &Doc| d.tables.iter().map(|t| t.rows.len()).collect::<Vec<_>>();
    let (sa, sb) = (shape(en), shape(zh));
    ensure(sa.len() == sb.len(), || {
        format!(
            "{EN_NAME} has {} tables, {ZH_NAME} has {} (rows per table: {EN_NAME} {sa:?}, \
             {ZH_NAME} {sb:?}); {BOTH}",
            sa.len(),
            sb.len()
        )
    })?;
    for (i, (a, b)) in en.tables.iter().zip(&zh.tables).enumerate() {
        let header = a.rows[0]
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>();
        let table = format!("table #{} (`| {} |`)", i + 1, header.join(" | "));
        let (ca, cb) = (a.rows[0].len(), b.rows[0].len());
        ensure(ca == cb, || {
            format!("{table} has {ca} columns in {EN_NAME} but {cb} in {ZH_NAME}; {BOTH}")
        })?;
        // Body rows are told apart by the code in their first cell: keys, flags, metric names.
        let (fa, fb) = (first_column(a), first_column(b));
        let r = fa.iter().zip(&fb).take_while(|(x, y)| x == y).count();
        let (na, nb, ka, kb) = (fa.len(), fb.len(), fa.get(r), fb.get(r));
        ensure(fa == fb, || {
            format!(
                "{table} has {na} body rows in {EN_NAME} and {nb} in {ZH_NAME}, first differing \
                 at body row {} (the first column's code: {EN_NAME} {ka:?}, {ZH_NAME} {kb:?}); \
                 keys stay untranslated and in the same order; {BOTH}",
                r + 1
            )
        })?;
    }
    Ok(())
}

fn link_targets(en: &Doc, zh: &Doc) -> Result<(), String> {
    // Each README's link to the other language is the one link that differs.
    let targets = |d: &Doc, other: &str| {
        let targets = d.links.iter().map(|l| l.target.clone());
        targets
            .filter(|t| !t.starts_with('#') && t != other)
            .collect::<BTreeSet<_>>()
    };
    let (a, b) = (targets(en, ZH_NAME), targets(zh, EN_NAME));
    let relative = |t: &String| !t.contains("://") && !t.starts_with("mailto:");
    ensure(a.iter().any(relative), || {
        format!("no relative links found in {EN_NAME}")
    })?;
    same_set("the link targets (files and URLs)", a, b)
}

/// Decodes `%XX` escapes, so `#%E9%83%A8%E7%BD%B2` and `#部署` are the same anchor.
fn percent_decode(s: &str) -> String {
    let (mut out, mut rest) = (Vec::new(), s.as_bytes());
    while let Some((&b, tail)) = rest.split_first() {
        let hex = tail
            .get(..2)
            .filter(|h| b == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        let hex = hex.map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap());
        out.push(hex.unwrap_or(b));
        rest = &tail[hex.map_or(0, |_| 2)..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// GitHub's heading anchor: the heading's rendered text lower-cased, every character other
/// than a letter, digit, `-`, `_` or space dropped (CJK characters are letters and stay; CJK
/// punctuation such as `，` `、` `（` goes), each space turned into `-`.
fn github_slug(text: &str) -> String {
    let kept = |c: &char| *c == ' ' || *c == '-' || *c == '_' || c.is_alphanumeric();
    let slug = text.to_lowercase().chars().filter(kept).collect::<String>();
    slug.replace(' ', "-")
}

/// Every anchor a `#fragment` link can land on in this document.
fn anchors(doc: &Doc) -> BTreeSet<String> {
    static HTML_ANCHOR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"<a\s[^>]*?\b(?:id|name)="([^"]*)""#).unwrap());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, text) in &doc.headings {
        // GitHub numbers a repeated heading's anchor: `run`, `run-1`, `run-2`.
        let base = github_slug(text);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out.extend(
        HTML_ANCHOR
            .captures_iter(&doc.html)
            .map(|c| c[1].to_string()),
    );
    out
}

fn anchors_resolve(en: &Doc, zh: &Doc) -> Result<(), String> {
    for doc in [en, zh] {
        let anchors = anchors(doc);
        let targets = doc.links.iter().filter_map(|l| l.target.strip_prefix('#'));
        let broken: Vec<String> = targets
            .map(percent_decode)
            .filter(|a| !anchors.contains(a))
            .collect();
        ensure(broken.is_empty(), || {
            format!(
                "{0} links to in-page anchors that match no heading and no <a id>: {broken:?}. \
                 Update {0}: point the link at a heading's GitHub anchor (lower-case, punctuation \
                 dropped, spaces to `-`, CJK kept) or add an explicit <a id=\"...\"></a>.\n  \
                 anchors available in {0}: {anchors:?}",
                doc.name
            )
        })?;
    }
    Ok(())
}

type Check = fn(&Doc, &Doc) -> Result<(), String>;

/// Every check on the two READMEs, with the name its `detects_*` tests know it by.
const CHECKS: [(&str, Check); 9] = [
    ("language switch", language_switches),
    ("heading levels", heading_levels),
    ("code blocks", code_blocks),
    ("flags", flags),
    ("settings keys", settings_keys),
    ("metric names", metric_names),
    ("tables", tables),
    ("link targets", link_targets),
    ("anchors", anchors_resolve),
];

macro_rules! readme_tests {
    ($($test:ident: $check:ident,)*) => {$(
        #[test]
        fn $test() {
            let en = parse(EN_NAME, include_str!("../README.md"));
            let zh = parse(ZH_NAME, include_str!("../README.zh-CN.md"));
            $check(&en, &zh).unwrap_or_else(|message| panic!("{message}"));
        }
    )*};
}

readme_tests! {
    each_readme_links_to_the_other_language_at_the_top: language_switches,
    heading_levels_match: heading_levels,
    code_blocks_are_identical: code_blocks,
    flags_match: flags,
    settings_keys_match: settings_keys,
    metric_names_match: metric_names,
    tables_have_the_same_rows: tables,
    link_targets_match: link_targets,
    in_page_anchors_resolve: anchors_resolve,
}

#[test]
fn slug_rules_follow_github() {
    assert_eq!(github_slug("Serving HTTPS"), "serving-https");
    assert_eq!(
        github_slug("Health, readiness and metrics"),
        "health-readiness-and-metrics"
    );
    let podman = github_slug("podman, skopeo, CRI-O (containers/image)");
    assert_eq!(podman, "podman-skopeo-cri-o-containersimage");
    assert_eq!(github_slug("提供 HTTPS 服务"), "提供-https-服务");
    assert_eq!(
        github_slug("containerd（以及 Kubernetes 节点）"),
        "containerd以及-kubernetes-节点"
    );
    assert_eq!(
        github_slug("健康检查、就绪检查与指标"),
        "健康检查就绪检查与指标"
    );
    assert_eq!(percent_decode("%E9%83%A8%E7%BD%B2"), "部署");
    assert_eq!(percent_decode("100%-a%2"), "100%-a%2");
    // Anchors come from the rendered text: code keeps its text, a link only its text; a repeated
    // heading is numbered.
    let doc = parse(
        EN_NAME,
        "## `make test`\n## See [the *docs*](x.md)\n## Run\n## Run\n",
    );
    let expected = ["make-test", "see-the-docs", "run", "run-1"];
    assert_eq!(anchors(&doc), expected.map(String::from).into());
}

// Two small READMEs that agree; each `detects_*` test changes one thing in the second. Only
// the language switch and the prose differ between languages, so the second is the first with
// those translated.

const EN_SAMPLE: &str = r#"# hubferry

[简体中文](README.zh-CN.md)

Run it with `--listen ADDR`; see [Settings](#settings) and [deploy](deploy/README.md).

## Settings

| setting | flag | environment |
|---|---|---|
| `listen` | `--listen ADDR` | `HUBFERRY_LISTEN` |
| `workers` | `--workers N` | `HUBFERRY_WORKERS` |

```sh
make run
```

### Metrics <a id="metrics"></a>

| metric | meaning |
|---|---|
| `hubferry_requests_total{route}` | client requests |
"#;

const TRANSLATION: [(&str, &str); 5] = [
    ("[简体中文](README.zh-CN.md)", "[English](README.md)"),
    (
        "Run it with `--listen ADDR`; see [Settings](#settings) and",
        "用 `--listen ADDR` 运行；见[设置](#设置)和",
    ),
    ("## Settings", "## 设置"),
    ("### Metrics", "### 指标"),
    ("| client requests |", "| 客户端请求 |"),
];

/// The checks that fail once the translated sample is edited (each `from` replaced by its `to`).
fn fails(edits: &[(&str, &str)]) -> Vec<&'static str> {
    let mut zh = EN_SAMPLE.to_string();
    for (from, to) in TRANSLATION.iter().chain(edits) {
        assert!(zh.contains(from), "the sample has no {from:?}");
        zh = zh.replacen(from, to, 1);
    }
    let (en, zh) = (parse(EN_NAME, EN_SAMPLE), parse(ZH_NAME, &zh));
    let failing = CHECKS.iter().filter(|(_, check)| check(&en, &zh).is_err());
    failing.map(|(name, _)| *name).collect()
}

const NONE: [&str; 0] = [];

#[test]
fn samples_agree() {
    assert_eq!(fails(&[]), NONE);
}

#[test]
fn detects_a_missing_or_misplaced_language_switch() {
    let switch = "[English](README.md)\n";
    assert_eq!(fails(&[(switch, "")]), ["language switch"]);
    assert_eq!(fails(&[("[English]", "[英文]")]), ["language switch"]);
    let below = fails(&[
        (switch, ""),
        ("## 设置\n", "## 设置\n\n[English](README.md)\n"),
    ]);
    assert_eq!(below, ["language switch"]);
}

#[test]
fn detects_a_heading_level_change() {
    assert_eq!(fails(&[("### 指标", "## 指标")]), ["heading levels"]);
    assert_eq!(
        fails(&[("## 设置\n", "## 设置\n\n#### 其他\n")]),
        ["heading levels"]
    );
}

#[test]
fn detects_an_edited_or_missing_code_block() {
    assert_eq!(fails(&[("make run", "make  run")]), ["code blocks"]);
    assert_eq!(fails(&[("```sh", "```console")]), ["code blocks"]);
    assert_eq!(fails(&[("```sh\nmake run\n```\n", "")]), ["code blocks"]);
}

#[test]
fn detects_a_flag_in_one_readme_only() {
    assert_eq!(fails(&[("ADDR` 运行", "ADDR --verbose` 运行")]), ["flags"]);
    // A flag in a code block is code, not a mention.
    assert_eq!(
        fails(&[("make run", "make run --verbose")]),
        ["code blocks"]
    );
}

#[test]
fn detects_a_renamed_or_reordered_setting() {
    assert_eq!(
        fails(&[("| `workers` |", "| `worker` |")]),
        ["settings keys", "tables"]
    );
    let listen = "| `listen` | `--listen ADDR` | `HUBFERRY_LISTEN` |\n";
    let after_workers = format!("`HUBFERRY_WORKERS` |\n{listen}");
    let swapped = fails(&[(listen, ""), ("`HUBFERRY_WORKERS` |\n", &after_workers)]);
    assert_eq!(swapped, ["settings keys", "tables"]);
}

#[test]
fn detects_a_renamed_metric() {
    let renamed = fails(&[("hubferry_requests_total", "hubferry_request_total")]);
    assert_eq!(renamed, ["metric names", "tables"]);
    assert_eq!(fails(&[("见", "见 `hubferry_extra` ")]), ["metric names"]);
}

#[test]
fn detects_tables_of_another_shape() {
    let workers = "| `workers` | `--workers N` | `HUBFERRY_WORKERS` |\n";
    assert_eq!(
        fails(&[(workers, "")]),
        ["flags", "settings keys", "tables"]
    );
    // An unescaped `|` makes one cell two, and GitHub shows only the first.
    assert_eq!(
        fails(&[("| 客户端请求 |", "| 客户端 | 请求 |")]),
        ["tables"]
    );
    assert_eq!(fails(&[("| 客户端请求 |", "|")]), ["tables"]);
    let column = [
        ("meaning |\n|---|---|", "meaning | type |\n|---|---|---|"),
        ("请求 |", "请求 | 计数 |"),
    ];
    assert_eq!(fails(&column), ["tables"]);
    assert_eq!(
        fails(&[("| metric | meaning |\n|---|---|\n", "")]),
        ["tables"]
    );
}

#[test]
fn detects_a_changed_link_target() {
    let other_file = fails(&[("(deploy/README.md)", "(deploy/README.zh-CN.md)")]);
    assert_eq!(other_file, ["link targets"]);
    assert_eq!(
        fails(&[("见", "见 [文档](https://example.com) ")]),
        ["link targets"]
    );
    // A badge is an image as a link's text; both targets count.
    let badge = parse(EN_NAME, "[![build](badge.svg)](ci.md)");
    let targets: Vec<&str> = badge.links.iter().map(|l| l.target.as_str()).collect();
    assert_eq!(targets, ["badge.svg", "ci.md"]);
}

#[test]
fn detects_an_in_page_link_to_no_anchor() {
    assert_eq!(fails(&[("(#设置)", "(#settings)")]), ["anchors"]);
    assert_eq!(fails(&[("(#设置)", "(#%E8%AE%BE%E7%BD%AE)")]), NONE);
    assert_eq!(fails(&[("(#设置)", "(#metrics)")]), NONE);
    let no_id = fails(&[("(#设置)", "(#metrics)"), (" <a id=\"metrics\"></a>", "")]);
    assert_eq!(no_id, ["anchors"]);
}
