//! Keeps the documentation's commands honest: every `earmark …` command in a
//! shell block of README.md and docs/*.md parses against the command line
//! (subcommands, flags and their values), so a renamed or removed flag fails
//! here instead of in a reader's terminal.

use std::path::{Path, PathBuf};

use clap::Parser;
use clap::error::ErrorKind;
use earmark::cli::Cli;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shell blocks of a Markdown file, continuation lines joined, with the
/// line number each command starts on.
fn shell_commands(text: &str) -> Vec<(usize, String)> {
    let mut commands = Vec::new();
    let mut in_shell = false;
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && matches!(lang, "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_shell {
            continue;
        }
        let (start, mut command) = pending.take().unwrap_or((n + 1, String::new()));
        command.push_str(trimmed.trim_start_matches("$ "));
        if let Some(head) = command.strip_suffix('\\') {
            pending = Some((start, head.to_owned()));
        } else {
            commands.push((start, command));
        }
    }
    commands
}

/// Drops a trailing `# comment` (outside quotes).
fn strip_comment(command: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in command.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &command[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    command
}

/// The earmark argument vectors of one shell line (`a && b` are two).
fn earmark_args(command: &str) -> Vec<Vec<String>> {
    let command = strip_comment(command);
    let mut found = Vec::new();
    for part in command.split("&&").flat_map(|p| p.split(" | ")) {
        let part = part.trim().trim_end_matches('&').trim();
        let Ok(words) = shell_words::split(part) else {
            continue;
        };
        let args: Vec<String> = match words.first().map(String::as_str) {
            Some("earmark") => words,
            // `cargo run [--release] -- ARGS` runs the earmark binary.
            Some("cargo") if words.get(1).map(String::as_str) == Some("run") => {
                match words.iter().position(|w| w == "--") {
                    Some(dash) if !words.iter().any(|w| w == "--example") => {
                        std::iter::once("earmark".to_owned())
                            .chain(words[dash + 1..].iter().cloned())
                            .collect()
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        found.push(args);
    }
    found
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![repo().join("README.md")];
    if let Ok(entries) = std::fs::read_dir(repo().join("docs")) {
        let mut more: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        more.sort();
        docs.extend(more);
    }
    docs
}

fn check(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read the document");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (line, command) in shell_commands(&text) {
        for args in earmark_args(&command) {
            checked += 1;
            if let Err(err) = Cli::try_parse_from(&args)
                && !matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                )
            {
                failures.push(format!(
                    "{}:{line}: `{}`: {}",
                    path.display(),
                    args.join(" "),
                    err.kind()
                ));
            }
        }
    }
    (checked, failures)
}

#[test]
fn every_documented_command_parses() {
    let mut failures = Vec::new();
    let mut readme_commands = 0;
    for doc in documents() {
        let (checked, mut failed) = check(&doc);
        if doc.ends_with("README.md") {
            readme_commands = checked;
        }
        failures.append(&mut failed);
    }
    assert!(
        readme_commands >= 20,
        "only {readme_commands} earmark commands found in README.md: is the parser broken?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_renamed_flag_is_caught() {
    let good = earmark_args("earmark scan corpus/ --report r.jsonl --no-ledger  # a dry run");
    assert_eq!(good.len(), 1);
    assert!(Cli::try_parse_from(&good[0]).is_ok());
    let renamed = earmark_args("earmark scan corpus/ --report r.jsonl --dry-run");
    assert!(Cli::try_parse_from(&renamed[0]).is_err());
    let joined = shell_commands("```sh\nearmark works add f.ogg \\\n    --id x\n```\n");
    assert_eq!(
        joined,
        vec![(2, "earmark works add f.ogg --id x".to_owned())]
    );
    assert_eq!(
        earmark_args("bash scripts/setup.sh && cargo run --release -- demo"),
        vec![vec!["earmark".to_owned(), "demo".to_owned()]]
    );
}
