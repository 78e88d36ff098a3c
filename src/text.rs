//! Turning raw text into sentences of words (ORTHO.md §1).
//!
//! This module owns tokenisation: paragraphs, sentences and lowercase words,
//! and reading a text file checked to be UTF-8. It knows nothing of token
//! ids; the interner assigns those.

use std::path::Path;

use crate::error::{Error, Result};

/// Characters that end a sentence inside a paragraph.
const SENTENCE_ENDS: [char; 4] = ['.', '?', ';', '!'];

/// Splits `text` into sentences, each a list of lowercase words.
///
/// Sentences that hold no word at all are dropped; one-word sentences are kept
/// because their word still belongs to the vocabulary.
pub fn sentences(text: &str) -> Vec<Vec<String>> {
    text.split("\n\n")
        .flat_map(|paragraph| paragraph.split(SENTENCE_ENDS))
        .map(str::trim)
        .filter(|sentence| !sentence.is_empty())
        .map(words)
        .filter(|words| !words.is_empty())
        .collect()
}

/// The lowercase words of one sentence: every character that is not
/// alphabetic, whitespace or an apostrophe separates words.
fn words(sentence: &str) -> Vec<String> {
    // No character is both alphabetic and whitespace, so the words are the
    // longest runs of letters and apostrophes.
    sentence
        .split(|c: char| !(c.is_alphabetic() || c == '\''))
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Largest text fold reads (a text is held in memory whole, with its
/// interner): 1 GiB.
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// Reads a whole text file, refusing directories, devices, files over
/// [`MAX_TEXT_BYTES`] and invalid UTF-8 with a message that names the file.
/// Pipes are read (up to the limit).
pub fn read_text_file(path: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;

    let cannot_read = |e| Error::io(format!("cannot read {}", path.display()), e);
    let kind = std::fs::metadata(path).map_err(cannot_read)?;
    let refuse = |what: &str| Err(Error::BadText(format!("{} is {what}", path.display())));
    if kind.is_dir() {
        return refuse("a directory, not a text file");
    }
    if kind.file_type().is_char_device() || kind.file_type().is_block_device() {
        return refuse("a device, not a text file");
    }
    let too_large = || {
        refuse(&format!(
            "larger than {MAX_TEXT_BYTES} bytes, the largest text fold reads"
        ))
    };
    if kind.len() > MAX_TEXT_BYTES {
        return too_large();
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_TEXT_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return too_large();
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::BadText(format!(
            "{} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(sentences: &[&[&str]]) -> Vec<Vec<String>> {
        sentences
            .iter()
            .map(|s| s.iter().map(|w| w.to_string()).collect())
            .collect()
    }

    #[test]
    fn splits_paragraphs_and_sentence_ends() {
        let text = "One two. Three? Four; five!\n\nSix seven";
        assert_eq!(
            sentences(text),
            owned(&[
                &["one", "two"],
                &["three"],
                &["four"],
                &["five"],
                &["six", "seven"]
            ])
        );
    }

    #[test]
    fn commas_digits_and_dashes_separate_words_not_sentences() {
        assert_eq!(
            sentences("We know't, we-know 42 it: all"),
            owned(&[&["we", "know't", "we", "know", "it", "all"]])
        );
    }

    #[test]
    fn single_newlines_do_not_split_paragraphs() {
        assert_eq!(sentences("a\nb"), owned(&[&["a", "b"]]));
    }

    #[test]
    fn unicode_letters_are_lowercased() {
        assert_eq!(sentences("ÉCOLE Straße"), owned(&[&["école", "straße"]]));
    }

    /// Words are runs of letters and apostrophes, split wherever anything
    /// else stands; that is the same as blanking every other character but
    /// whitespace and splitting on whitespace only because no character is
    /// both a letter and whitespace.
    #[test]
    fn no_character_is_both_a_letter_and_whitespace() {
        let both: Vec<char> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_alphabetic() && c.is_whitespace())
            .collect();
        assert!(both.is_empty(), "{both:?}");
        assert_eq!(
            sentences("a\u{3000}b\u{a0}c\u{2028}d\te'f"),
            owned(&[&["a", "b", "c", "d", "e'f"]])
        );
    }

    #[test]
    fn wordless_sentences_are_dropped() {
        assert!(sentences("... 12 -- !\n\n").is_empty());
        assert!(sentences("").is_empty());
    }
}
