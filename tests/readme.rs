//! README.md's Rust snippets, compiled in every `cargo test` so they
//! cannot drift from the API.
//!
//! `tests/build.rs` copies every ```rust block of README.md into an
//! `async fn snippet_N() -> Result<(), Box<dyn Error + Send + Sync>>` in
//! `$OUT_DIR/readme_snippets.rs`, included below. The functions are
//! type-checked, never run: snippets start servers that wait for Ctrl-C.
//! Items (the service trait, structs, impls, `use`) are fine inside a
//! function body, and so is `#[courier::service]`'s output.
//!
//! Markers, in an HTML comment on the line just before a block's opening
//! fence (GitHub does not show them):
//!
//! - `<!-- readme-test: continue -->`: the block goes on from the previous
//!   Rust block (same function, so it sees the earlier block's items and
//!   variables), as a reader reads them.
//! - `<!-- readme-test: ignore (why) -->`: not compiled; for what cannot be
//!   (a `build.rs`). The reason is required.
//!
//! Blocks in other languages (`sh`, `python`, `toml`) are skipped. A
//! snippet's `courier::include_protos!();` includes the code generated from
//! `examples/proto/helloworld.proto`, the README's `.proto` example.
//!
//! A compile error here points into `$OUT_DIR/readme_snippets.rs`; the doc
//! comment above each function gives the README line it came from.

#[allow(clippy::all, missing_docs)]
mod snippets {
    include!(concat!(env!("OUT_DIR"), "/readme_snippets.rs"));
}

/// The README's Rust blocks, counted here independently of the build
/// script, so a block it failed to see (and so never compiled) is noticed.
fn rust_blocks_in_readme() -> (usize, usize, usize) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md is readable");
    let lines: Vec<&str> = readme.lines().collect();
    let (mut rust, mut continued, mut ignored) = (0, 0, 0);
    let mut in_block = false;
    for (i, line) in lines.iter().enumerate() {
        let Some(info) = line.trim_start().strip_prefix("```") else { continue };
        if in_block {
            in_block = false;
            continue;
        }
        in_block = true;
        if info.starts_with("rust") {
            rust += 1;
            let before = if i > 0 { lines[i - 1].trim() } else { "" };
            continued += usize::from(before == "<!-- readme-test: continue -->");
            ignored += usize::from(before.starts_with("<!-- readme-test: ignore"));
        }
    }
    (rust, continued, ignored)
}

#[test]
fn every_rust_block_in_the_readme_is_compiled() {
    let (rust, continued, ignored) = rust_blocks_in_readme();
    assert!(rust >= 3, "the README has lost its Rust examples? ({rust} found)");
    assert_eq!(
        snippets::COUNT,
        rust - continued - ignored,
        "README blocks: {rust} Rust, {continued} continued, {ignored} ignored"
    );
    // Making each future (without running it) keeps every snippet in use.
    assert_eq!(snippets::all().len(), snippets::COUNT);
}
