//! The seed document's usage example, unchanged, inside a `main`.

use fold::process_text;
use std::collections::{HashMap, HashSet};

fn main() -> Result<(), fold::Error> {
    let mut seen_ids = HashSet::new();
    let mut optimal_ortho = None;
    let mut frontier = HashSet::new();
    let mut frontier_orthos_saved = HashMap::new();

    let (interner, changed, frontier_size, impacted, processed) = process_text(
        "your text here",
        None,
        &mut seen_ids,
        &mut optimal_ortho,
        &mut frontier,
        &mut frontier_orthos_saved,
        |_| Ok(()),
    )?;

    println!(
        "version {}: {} orthos, {frontier_size} leaves, {changed} prefixes changed, \
         {impacted} former leaves extended, {processed} processed",
        interner.version(),
        seen_ids.len(),
    );
    Ok(())
}
