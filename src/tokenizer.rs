//! The CLIP BPE tokenizer, built with the `tokenizers` crate from a model's `vocab.json` +
//! `merges.txt` (read as transformers' CLIPTokenizer reads them, the SD family's reference) or
//! from the copy bundled in the binary (read as `open_clip.tokenize`, MVDream's).

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::Tokenizer;

pub const BOS: u32 = 49406;
pub const EOS: u32 = 49407;
/// Sequence length of every SD text encoder.
pub const CONTEXT_LENGTH: usize = 77;

const BUNDLED_VOCAB: &str = include_str!("../assets/clip/vocab.json");
const BUNDLED_MERGES: &str = include_str!("../assets/clip/merges.txt");

/// CLIP's pre-tokenisation: special tokens, contractions, letter runs, single digits, and runs of
/// other non-space characters; everything else (whitespace) is dropped.
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    inner: Tokenizer,
    pad: u32,
}

impl ClipTokenizer {
    /// The tokenizer of a diffusers model folder's `tokenizer/` directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
        };
        let (vocab, merges) = (read("vocab.json")?, read("merges.txt")?);
        // SD 2.x pads with "!" (id 0, as open_clip does), SD 1.x with <|endoftext|>.
        let specials = dir.join("special_tokens_map.json");
        let mut pad_token = None;
        if let Ok(text) = std::fs::read_to_string(&specials) {
            let map: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::BadConfig {
                    path: specials.clone(),
                    reason: e.to_string(),
                })?;
            let pad = match &map["pad_token"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => {
                    o.get("content").and_then(|c| c.as_str()).map(String::from)
                }
                _ => None,
            };
            pad_token = pad;
        }
        // transformers' CLIPTokenizer (what diffusers and the official DreamDistribution code
        // load from this folder) matches its special tokens before BPE, so a literal "!" in a
        // prompt is the pad token there (id 0, not the word "!</w>"; diffusers#4153): the same
        // here, for models of that family.
        let extra: Vec<&str> = pad_token.as_deref().into_iter().collect();
        let mut tok = Self::from_parts(&vocab, &merges, &extra)?;
        if let Some(pad) = pad_token {
            tok.pad = tok.inner.token_to_id(&pad).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "{}: pad token {pad:?} is not in the vocabulary",
                    specials.display()
                ))
            })?;
        }
        Ok(tok)
    }

    /// The copy of the CLIP vocabulary compiled into dream3d, read as open_clip reads prompts
    /// (what the official MVDream code uses: "!" is a word; pad id 0).
    pub fn bundled() -> Result<Self> {
        Self::from_parts(BUNDLED_VOCAB, BUNDLED_MERGES, &[])
    }

    /// The model's own tokenizer when its folder has one, else the bundled copy.
    pub fn for_model(tokenizer_dir: Option<&Path>) -> Result<Self> {
        match tokenizer_dir {
            Some(dir) if dir.join("vocab.json").is_file() => Self::from_dir(dir),
            _ => Self::bundled(),
        }
    }

    /// `specials`: vocabulary tokens matched whole before BPE, besides start and end of text.
    fn from_parts(vocab_json: &str, merges_txt: &str, specials: &[&str]) -> Result<Self> {
        let vocab: serde_json::Value = serde_json::from_str(vocab_json)
            .map_err(|e| Error::Tokenizer(format!("vocab.json: {e}")))?;
        let merges: Vec<&str> = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .collect();
        let added = |id: u32, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        };
        let mut added_tokens = vec![added(BOS, "<|startoftext|>"), added(EOS, "<|endoftext|>")];
        for &token in specials {
            if let Some(id) = vocab.get(token).and_then(|v| v.as_u64()) {
                if id != BOS as u64 && id != EOS as u64 {
                    added_tokens.push(added(id as u32, token));
                }
            }
        }
        let spec = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added_tokens,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
                "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges
            }
        });
        let inner: Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| Error::Tokenizer(format!("cannot build the CLIP BPE tokenizer: {e}")))?;
        if inner.token_to_id("<|startoftext|>") != Some(BOS)
            || inner.token_to_id("<|endoftext|>") != Some(EOS)
        {
            return Err(Error::Tokenizer(
                "vocab.json is not the CLIP vocabulary (<|startoftext|> must be 49406, <|endoftext|> 49407)".into(),
            ));
        }
        Ok(Self { inner, pad: 0 })
    }

    /// BPE ids of `text` with no start/end tokens (for splicing words around soft tokens).
    pub fn encode_words(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[BOS] words… [EOS] pad…`, exactly [`CONTEXT_LENGTH`] ids; a long prompt is cut so
    /// that EOS stays last.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.frame(&self.encode_words(text)?))
    }

    /// Wraps token ids with BOS/EOS and pads (or truncates) to [`CONTEXT_LENGTH`].
    pub fn frame(&self, words: &[u32]) -> Vec<u32> {
        let keep = words.len().min(CONTEXT_LENGTH - 2);
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(BOS);
        ids.extend_from_slice(&words[..keep]);
        ids.push(EOS);
        ids.resize(CONTEXT_LENGTH, self.pad);
        ids
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }
}
