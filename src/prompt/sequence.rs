//! The token-embedding sequences that carry learned soft tokens into the text encoder:
//! `[BOS] prefix… [V₁…V_L] suffix… [EOS] pad…`, 77 slots.

use crate::error::{Error, Result};
use crate::models::ClipTextModel;
use crate::tokenizer::{ClipTokenizer, CONTEXT_LENGTH};
use candle_core::{IndexOp, Result as CResult, Tensor};

/// How position embeddings reach the fixed (word) tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionMode {
    /// As the official DreamDistribution code: fixed tokens are embedded *with* the position
    /// of their index in their own tokenisation, and the encoder adds every slot's position
    /// again; soft tokens get one position embedding.
    Official,
    /// Every slot gets exactly one position embedding.
    Once,
}

/// Real words placed around the soft tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    pub prefix: String,
    pub suffix: String,
}

/// The fixed part of the K sequences for one template, ready to receive soft tokens.
pub struct Frame {
    /// 1 × 77 × D embeddings of the fixed tokens; the soft slots are zero.
    fixed: Tensor,
    /// First soft slot and the number of soft slots.
    soft_slots: (usize, usize),
    /// Position of the end-of-text token (its hidden state is the pooled feature).
    pub eos: usize,
}

impl Frame {
    /// Lays out `[BOS] prefix [L soft] suffix [EOS] pad` for `soft_len` soft tokens.
    pub fn new(
        text: &ClipTextModel,
        tokenizer: &ClipTokenizer,
        template: &Template,
        soft_len: usize,
        mode: PositionMode,
    ) -> Result<Self> {
        let prefix = tokenizer.encode_words(&template.prefix)?;
        let suffix = tokenizer.encode_words(&template.suffix)?;
        let used = 2 + prefix.len() + soft_len + suffix.len();
        if used > CONTEXT_LENGTH {
            return Err(Error::Input(format!(
                "prompt too long: {} prefix + {soft_len} learned + {} suffix tokens need {used} of {CONTEXT_LENGTH} slots; shorten the words around the learned tokens",
                prefix.len(),
                suffix.len()
            )));
        }
        // Each side tokenised on its own, as the official code does: the prefix side is
        // `[BOS] prefix`, the suffix side `[BOS] suffix [EOS] pad…` with its BOS dropped.
        let head = tokenizer.frame(&prefix);
        let tail = tokenizer.frame(&suffix);
        let head_len = 1 + prefix.len();
        let tail_len = CONTEXT_LENGTH - head_len - soft_len;
        let embed = |ids: &[u32], from: usize, len: usize| -> CResult<Tensor> {
            let ids = Tensor::new(ids, text.position_embeddings(1)?.device())?.unsqueeze(0)?;
            let tokens = text.embed_tokens(&ids)?.i((.., from..from + len))?;
            match mode {
                PositionMode::Official => tokens.broadcast_add(
                    &text
                        .position_embeddings(CONTEXT_LENGTH)?
                        .i(from..from + len)?
                        .unsqueeze(0)?,
                ),
                PositionMode::Once => Ok(tokens),
            }
        };
        let head = embed(&head, 0, head_len)?;
        let tail = embed(&tail, 1, tail_len)?;
        let soft = Tensor::zeros((1, soft_len, head.dim(2)?), head.dtype(), head.device())?;
        Ok(Self {
            fixed: Tensor::cat(&[&head, &soft, &tail], 1)?,
            soft_slots: (head_len, soft_len),
            eos: head_len + soft_len + suffix.len(),
        })
    }

    /// K × 77 × D sequences with `soft` (K × L × D) in the soft slots.
    pub fn fill(&self, soft: &Tensor) -> CResult<Tensor> {
        let (start, len) = self.soft_slots;
        let (k, l, _) = soft.dims3()?;
        if l != len {
            candle_core::bail!("frame has {len} soft slots, got {l} soft tokens");
        }
        let placed = soft.pad_with_zeros(1, start, CONTEXT_LENGTH - start - len)?;
        debug_assert_eq!(placed.dim(0)?, k);
        crate::nn::add_frozen(&placed, &self.fixed)
    }
}
