//! How evenly origin-token shards split a search: runs every shard of the
//! texts given (ingested in order) and prints the largest shards' shares.
//!
//! `cargo run --release --example shard_sizes -- ../shared/golden/texts/ts_0_20k.txt`

use fold::search::{Scope, SearchConfig, Searcher, Unobserved};
use fold::{Interner, Token};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let texts = std::env::args()
        .skip(1)
        .map(|path| fold::embedded::read_text_file(path.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if texts.is_empty() {
        return Err("usage: shard_sizes FILE...".into());
    }
    let interner = Interner::from_texts(texts.iter().map(String::as_str));
    let searcher = Searcher::new(SearchConfig {
        threads: 1,
        ..SearchConfig::default()
    })?;
    let mut shards = Vec::new();
    for origin in 0..interner.vocabulary() as u32 {
        let outcome = searcher.run(&interner, Scope::Origin(Token(origin)), &mut Unobserved)?;
        shards.push((outcome.figures.orthos, origin));
    }
    shards.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = shards.iter().map(|(orthos, _)| orthos).sum();
    println!("{} shards, {total} orthos", shards.len());
    for (orthos, origin) in shards.iter().take(10) {
        let word = interner.word(Token(*origin)).unwrap_or("?");
        println!(
            "{word:>12} {orthos:>10} {:>6.2}%",
            100.0 * *orthos as f64 / total as f64
        );
    }
    let median = shards[shards.len() / 2].0;
    println!("median shard: {median} orthos");
    Ok(())
}
