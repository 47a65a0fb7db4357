//! Keeps `README.md` and its Simplified Chinese translation `README.zh-CN.md` in step.
//!
//! The prose is translated, so it cannot be compared; everything a reader copies or follows can:
//! the heading structure, the fenced code blocks (byte for byte), the flags, setting keys and
//! metric names in backticks, the tables' shape and first columns, the link targets, and the
//! in-page anchors (each must resolve in its own file). When one README is edited without the
//! other, these tests fail and say which file to bring in line.

use std::collections::{BTreeSet, HashMap};

const EN_NAME: &str = "README.md";
const ZH_NAME: &str = "README.zh-CN.md";
const EN_TEXT: &str = include_str!("../README.md");
const ZH_TEXT: &str = include_str!("../README.zh-CN.md");

/// The parts of a README that must agree between the languages.
struct Doc {
    name: &'static str,
    /// (level, text) of every ATX heading outside code fences.
    headings: Vec<(usize, String)>,
    /// Every fenced code block, fence lines included, exactly as written.
    fences: Vec<String>,
    /// The text outside code fences (fenced lines blanked), for code spans and links.
    prose: String,
    /// Every table: its rows (header first, delimiter row left out), each a list of raw cells.
    tables: Vec<Vec<Vec<String>>>,
}

fn en() -> Doc {
    parse(EN_NAME, EN_TEXT)
}

fn zh() -> Doc {
    parse(ZH_NAME, ZH_TEXT)
}

/// The opening fence of a code block: its character and length, if `line` opens one.
fn fence_open(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let run = rest.chars().take_while(|&c| c == ch).count();
    // A backtick fence's info string may not contain backticks.
    if run < 3 || (ch == '`' && rest[run..].contains('`')) {
        return None;
    }
    Some((ch, run))
}

fn fence_closes(line: &str, (ch, len): (char, usize)) -> bool {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return false;
    }
    let run = trimmed.chars().take_while(|&c| c == ch).count();
    run >= len && trimmed[run..].trim().is_empty()
}

fn heading(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &trimmed[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    // An optional closing sequence of #s, preceded by a space, is not part of the text.
    let mut text = rest.trim();
    let without_closing = text.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with(' ') {
        text = without_closing.trim_end();
    }
    Some((level, text.to_string()))
}

fn is_delimiter_row(cells: &[String]) -> bool {
    !cells.is_empty()
        && cells.iter().all(|c| {
            let c = c.trim();
            !c.is_empty() && c.contains('-') && c.chars().all(|ch| matches!(ch, '-' | ':' | ' '))
        })
}

/// Splits a table row into cells, ignoring pipes inside code spans and escaped pipes.
fn split_row(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    let mut escaped = false;
    for c in line.chars() {
        if escaped {
            cell.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cell.push(c);
                escaped = true;
            }
            '`' => {
                cell.push(c);
                in_code = !in_code;
            }
            '|' if !in_code => cells.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

fn parse(name: &'static str, text: &str) -> Doc {
    let mut headings = Vec::new();
    let mut fences = Vec::new();
    let mut prose = String::new();
    let mut tables: Vec<Vec<Vec<String>>> = Vec::new();
    let mut open: Option<((char, usize), Vec<&str>)> = None;
    let mut in_table = false;

    for line in text.lines() {
        if let Some((fence, lines)) = open.as_mut() {
            lines.push(line);
            if fence_closes(line, *fence) {
                fences.push(lines.join("\n"));
                open = None;
            }
            prose.push('\n');
            continue;
        }
        if let Some(fence) = fence_open(line) {
            open = Some((fence, vec![line]));
            in_table = false;
            prose.push('\n');
            continue;
        }
        prose.push_str(line);
        prose.push('\n');

        if let Some(h) = heading(line) {
            headings.push(h);
        }
        if line.trim_start().starts_with('|') {
            if !in_table {
                tables.push(Vec::new());
                in_table = true;
            }
            let cells = split_row(line);
            if !is_delimiter_row(&cells) {
                tables.last_mut().unwrap().push(cells);
            }
        } else {
            in_table = false;
        }
    }
    // An unclosed fence runs to the end of the document.
    if let Some((_, lines)) = open {
        fences.push(lines.join("\n"));
    }
    Doc {
        name,
        headings,
        fences,
        prose,
        tables,
    }
}

/// The contents of every code span in `text` (CommonMark backtick runs, possibly multi-line).
fn code_spans(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let open = run_at(i);
        let start = i + open;
        let mut j = start;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let run = run_at(j);
                if run == open {
                    close = Some(j);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                spans.push(text[start..end].replace('\n', " ").trim().to_string());
                i = end + open;
            }
            // No closing run: the backticks are literal text.
            None => i = start,
        }
    }
    spans
}

/// Command-line flags (`--name`) mentioned in code spans.
fn flags(doc: &Doc) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for span in code_spans(&doc.prose) {
        let chars: Vec<char> = span.chars().collect();
        let mut i = 0;
        while i + 2 < chars.len() {
            let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '-');
            if starts_word
                && chars[i] == '-'
                && chars[i + 1] == '-'
                && chars[i + 2].is_ascii_alphabetic()
            {
                let flag: String = chars[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '-')
                    .collect();
                i += flag.len();
                out.insert(flag);
            } else {
                i += 1;
            }
        }
    }
    out
}

/// `hubferry_*` metric names mentioned in code spans.
fn metric_names(doc: &Doc) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for span in code_spans(&doc.prose) {
        let mut rest = span.as_str();
        while let Some(pos) = rest.find("hubferry_") {
            let before = rest[..pos].chars().next_back();
            let tail = &rest[pos..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                out.insert(name.clone());
            }
            rest = &tail[name.len()..];
        }
    }
    out
}

/// The settings table: the one whose rows name `HUBFERRY_*` environment variables.
fn settings_table(doc: &Doc) -> &Vec<Vec<String>> {
    doc.tables
        .iter()
        .find(|t| {
            t.iter()
                .skip(1)
                .any(|row| row.iter().any(|c| c.starts_with("`HUBFERRY_")))
        })
        .unwrap_or_else(|| {
            panic!(
                "{} has no settings table (a table whose rows name `HUBFERRY_*` variables); \
                 restore it from the other README",
                doc.name
            )
        })
}

/// The code spans in the first cell of each body row of a table.
fn first_column(table: &[Vec<String>]) -> Vec<Vec<String>> {
    table
        .iter()
        .skip(1)
        .map(|row| code_spans(row.first().map(String::as_str).unwrap_or("")))
        .collect()
}

/// Every link target `](target)` in the prose, in order.
fn link_targets(doc: &Doc) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = doc.prose.as_str();
    while let Some(pos) = rest.find("](") {
        let tail = &rest[pos + 2..];
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in tail.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                ')' => depth -= 1,
                '\n' => break,
                _ => {}
            }
        }
        match end {
            Some(end) => {
                // Drop an optional link title: `](target "title")`.
                let target = tail[..end].split_whitespace().next().unwrap_or("");
                out.push(target.to_string());
                rest = &tail[end..];
            }
            None => rest = tail,
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// Decodes `%XX` escapes, so `#%E9%83%A8%E7%BD%B2` and `#部署` are the same anchor.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// GitHub's heading anchor: the heading's text lower-cased, every character other than a
/// letter, digit, `-`, `_` or space dropped (CJK characters are letters and stay; CJK
/// punctuation such as `，` `、` `（` goes), each space turned into `-`.
fn github_slug(text: &str) -> String {
    // Inline code keeps its text; link syntax keeps only the link text.
    let mut plain = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        plain.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](") {
            Some(close) if after[close + 2..].contains(')') => {
                plain.push_str(&after[..close]);
                let tail = &after[close + 2..];
                rest = &tail[tail.find(')').unwrap() + 1..];
            }
            _ => {
                plain.push('[');
                rest = after;
            }
        }
    }
    plain.push_str(rest);

    plain
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a `#fragment` link can land on in this document.
fn anchors(doc: &Doc) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, text) in &doc.headings {
        let base = github_slug(text);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    // Explicit HTML anchors: <a id="..."> or <a name="...">.
    for attr in ["id=\"", "name=\""] {
        let mut rest = doc.prose.as_str();
        while let Some(pos) = rest.find("<a ") {
            let tag_end = rest[pos..].find('>').map_or(rest.len(), |e| pos + e);
            let tag = &rest[pos..tag_end];
            if let Some(a) = tag.find(attr) {
                let value = &tag[a + attr.len()..];
                if let Some(q) = value.find('"') {
                    out.insert(value[..q].to_string());
                }
            }
            rest = &rest[tag_end..];
        }
    }
    out
}

/// Fails with a message naming what only one README has, and which README to update.
fn assert_same_set(what: &str, en: &BTreeSet<String>, zh: &BTreeSet<String>) {
    let en_only: Vec<&String> = en.difference(zh).collect();
    let zh_only: Vec<&String> = zh.difference(en).collect();
    let mut problems = Vec::new();
    if !en_only.is_empty() {
        problems.push(format!(
            "  in {EN_NAME} but missing from {ZH_NAME}: {en_only:?}\n    -> add them to {ZH_NAME} \
             (translated where they sit in {EN_NAME}), or remove them from {EN_NAME} if they are stale"
        ));
    }
    if !zh_only.is_empty() {
        problems.push(format!(
            "  in {ZH_NAME} but missing from {EN_NAME}: {zh_only:?}\n    -> add them to {EN_NAME} \
             (where they sit in {ZH_NAME}), or remove them from {ZH_NAME} if they are stale"
        ));
    }
    assert!(
        problems.is_empty(),
        "{EN_NAME} and {ZH_NAME} disagree on {what}:\n{}",
        problems.join("\n")
    );
}

fn both_readmes() -> String {
    format!(
        "edit {ZH_NAME} to follow {EN_NAME}, or {EN_NAME} to follow {ZH_NAME}, whichever is behind"
    )
}

#[test]
fn each_readme_links_to_the_other_language_at_the_top() {
    for (doc, switch) in [
        (en(), format!("[简体中文]({ZH_NAME})")),
        (zh(), format!("[English]({EN_NAME})")),
    ] {
        let first_section = doc
            .prose
            .lines()
            .position(|l| heading(l).is_some_and(|(level, _)| level >= 2))
            .unwrap_or(usize::MAX);
        let at = doc.prose.lines().position(|l| l.contains(switch.as_str()));
        assert!(
            at.is_some_and(|line| line < first_section),
            "{} must link to the other language with `{switch}` right under its title \
             (before the first `##` section); update {}",
            doc.name,
            doc.name
        );
    }
}

#[test]
fn heading_levels_match() {
    let (en, zh) = (en(), zh());
    let en_levels: Vec<usize> = en.headings.iter().map(|h| h.0).collect();
    let zh_levels: Vec<usize> = zh.headings.iter().map(|h| h.0).collect();
    if en_levels == zh_levels {
        return;
    }
    let render = |d: &Doc| {
        d.headings
            .iter()
            .map(|(l, t)| format!("    {} {t}", "#".repeat(*l)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first_diff = en_levels
        .iter()
        .zip(&zh_levels)
        .position(|(a, b)| a != b)
        .unwrap_or(en_levels.len().min(zh_levels.len()));
    panic!(
        "{EN_NAME} ({} headings) and {ZH_NAME} ({} headings) have different heading structure, \
         first differing at heading #{} ({EN_NAME}: {:?}, {ZH_NAME}: {:?}); {}.\n  {EN_NAME}:\n{}\n  {ZH_NAME}:\n{}",
        en_levels.len(),
        zh_levels.len(),
        first_diff + 1,
        en.headings.get(first_diff),
        zh.headings.get(first_diff),
        both_readmes(),
        render(&en),
        render(&zh),
    );
}

#[test]
fn code_blocks_are_identical() {
    let (en, zh) = (en(), zh());
    for (i, (a, b)) in en.fences.iter().zip(&zh.fences).enumerate() {
        assert!(
            a == b,
            "fenced code block #{} differs between the READMEs (code blocks are copied byte for \
             byte, never translated); {}.\n--- {EN_NAME}:\n{a}\n--- {ZH_NAME}:\n{b}",
            i + 1,
            both_readmes()
        );
    }
    assert!(
        en.fences.len() == zh.fences.len(),
        "{EN_NAME} has {} fenced code blocks, {ZH_NAME} has {}; {}. Extra blocks:\n{}",
        en.fences.len(),
        zh.fences.len(),
        both_readmes(),
        en.fences
            .iter()
            .skip(zh.fences.len())
            .map(|b| format!("--- only in {EN_NAME}:\n{b}"))
            .chain(
                zh.fences
                    .iter()
                    .skip(en.fences.len())
                    .map(|b| format!("--- only in {ZH_NAME}:\n{b}"))
            )
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn flags_match() {
    let (en, zh) = (en(), zh());
    assert!(!flags(&en).is_empty(), "no `--flag`s found in {EN_NAME}");
    assert_same_set("the `--flags` in backticks", &flags(&en), &flags(&zh));
}

#[test]
fn settings_keys_match() {
    let (en, zh) = (en(), zh());
    let keys = |d: &Doc| -> Vec<String> {
        first_column(settings_table(d))
            .into_iter()
            .map(|spans| spans.join(" "))
            .collect()
    };
    let (en_keys, zh_keys) = (keys(&en), keys(&zh));
    assert!(!en_keys.is_empty(), "no setting keys found in {EN_NAME}");
    assert_same_set(
        "the setting keys in the settings table's first column",
        &en_keys.iter().cloned().collect(),
        &zh_keys.iter().cloned().collect(),
    );
    assert!(
        en_keys == zh_keys,
        "the settings tables list the same keys in a different order; {}.\n  {EN_NAME}: {en_keys:?}\n  {ZH_NAME}: {zh_keys:?}",
        both_readmes()
    );
}

#[test]
fn metric_names_match() {
    let (en, zh) = (en(), zh());
    assert!(
        !metric_names(&en).is_empty(),
        "no `hubferry_*` metrics found in {EN_NAME}"
    );
    assert_same_set(
        "the `hubferry_*` metric names",
        &metric_names(&en),
        &metric_names(&zh),
    );
}

#[test]
fn tables_have_the_same_rows() {
    let (en, zh) = (en(), zh());
    let shape = |d: &Doc| d.tables.iter().map(Vec::len).collect::<Vec<_>>();
    assert!(
        en.tables.len() == zh.tables.len(),
        "{EN_NAME} has {} tables, {ZH_NAME} has {} (rows per table: {EN_NAME} {:?}, {ZH_NAME} {:?}); {}",
        en.tables.len(),
        zh.tables.len(),
        shape(&en),
        shape(&zh),
        both_readmes()
    );
    for (i, (a, b)) in en.tables.iter().zip(&zh.tables).enumerate() {
        let header = a.first().map(|h| h.join(" | ")).unwrap_or_default();
        let (fa, fb) = (first_column(a), first_column(b));
        let only = |x: &[Vec<String>], y: &[Vec<String>]| -> Vec<Vec<String>> {
            x.iter().filter(|k| !y.contains(k)).cloned().collect()
        };
        assert!(
            a.len() == b.len(),
            "table #{} (`| {header} |`) has {} rows (header included) in {EN_NAME} but {} in \
             {ZH_NAME}; {}.\n  rows only in {EN_NAME} (by first column): {:?}\n  rows only in \
             {ZH_NAME} (by first column): {:?}\n  first column in {EN_NAME}: {fa:?}\n  first \
             column in {ZH_NAME}: {fb:?}",
            i + 1,
            a.len(),
            b.len(),
            both_readmes(),
            only(&fa, &fb),
            only(&fb, &fa),
        );
        for (r, (ra, rb)) in a.iter().zip(b).enumerate() {
            assert!(
                ra.len() == rb.len(),
                "table #{} (`| {header} |`), row {}: {} cells in {EN_NAME} but {} in {ZH_NAME}; {}",
                i + 1,
                r + 1,
                ra.len(),
                rb.len(),
                both_readmes()
            );
        }
        for (r, (ka, kb)) in fa.iter().zip(&fb).enumerate() {
            assert!(
                ka == kb,
                "table #{} (`| {header} |`), body row {}: the first column's code differs \
                 ({EN_NAME}: {ka:?}, {ZH_NAME}: {kb:?}); keys stay untranslated and in the same \
                 order; {}",
                i + 1,
                r + 1,
                both_readmes()
            );
        }
    }
}

#[test]
fn link_targets_match() {
    let (en, zh) = (en(), zh());
    // Each README's link to the other language is the one link that differs.
    let targets = |d: &Doc, other: &str| -> BTreeSet<String> {
        link_targets(d)
            .into_iter()
            .filter(|t| !t.starts_with('#') && t != other)
            .collect()
    };
    let (en_targets, zh_targets) = (targets(&en, ZH_NAME), targets(&zh, EN_NAME));
    assert!(
        en_targets.iter().any(|t| !is_external(t)),
        "no relative links found in {EN_NAME}"
    );
    assert_same_set(
        "the link targets (files and URLs)",
        &en_targets,
        &zh_targets,
    );
}

#[test]
fn in_page_anchors_resolve() {
    for doc in [en(), zh()] {
        let anchors = anchors(&doc);
        let broken: Vec<String> = link_targets(&doc)
            .into_iter()
            .filter_map(|t| t.strip_prefix('#').map(percent_decode))
            .filter(|a| !anchors.contains(a))
            .collect();
        assert!(
            broken.is_empty(),
            "{} links to in-page anchors that match no heading and no <a id>: {broken:?}. \
             Update {}: point the link at a heading's GitHub anchor (lower-case, punctuation \
             dropped, spaces to `-`, CJK kept) or add an explicit <a id=\"...\"></a>.\n  \
             anchors available in {}: {anchors:?}",
            doc.name,
            doc.name,
            doc.name
        );
    }
}

#[test]
fn slug_rules_follow_github() {
    assert_eq!(github_slug("Serving HTTPS"), "serving-https");
    assert_eq!(
        github_slug("Health, readiness and metrics"),
        "health-readiness-and-metrics"
    );
    assert_eq!(
        github_slug("podman, skopeo, CRI-O (containers/image)"),
        "podman-skopeo-cri-o-containersimage"
    );
    assert_eq!(github_slug("提供 HTTPS 服务"), "提供-https-服务");
    assert_eq!(
        github_slug("containerd（以及 Kubernetes 节点）"),
        "containerd以及-kubernetes-节点"
    );
    assert_eq!(
        github_slug("健康检查、就绪检查与指标"),
        "健康检查就绪检查与指标"
    );
    assert_eq!(github_slug("`make test`"), "make-test");
    assert_eq!(percent_decode("%E9%83%A8%E7%BD%B2"), "部署");
}
