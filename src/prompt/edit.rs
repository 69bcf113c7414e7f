//! Text-guided edits of a prompt distribution: real words placed around the learned tokens,
//! the K prompts re-encoded in that context and μ, σ re-fitted (as the official code does with
//! its inference prefix and suffix).

use super::gaussian::Gaussian;
use super::learner::{encode, gaussian};
use super::sequence::{Frame, Template};
use super::PromptDistribution;
use crate::error::{Error, Result};
use crate::models::ClipTextModel;
use crate::tokenizer::ClipTokenizer;

/// Where the learned tokens go in an edit template.
pub const MARKER: char = '*';

/// An `--edit` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Plain words, appended after the learned tokens (and the distribution's own suffix).
    Append(String),
    /// A template with one marker: `a photo of * made of gold`, `pink *`.
    Placed(Template),
}

impl Edit {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let markers = text.matches(MARKER).count();
        match markers {
            _ if text.is_empty() => Err(Error::Input(
                "--edit is empty: give words to append (\"made of gold\") or a template (\"pink *\")"
                    .into(),
            )),
            0 => Ok(Self::Append(text.to_string())),
            1 => {
                let (prefix, suffix) = text.split_once(MARKER).expect("one marker");
                Ok(Self::Placed(Template {
                    prefix: prefix.trim().to_string(),
                    suffix: suffix.trim().to_string(),
                }))
            }
            n => Err(Error::Input(format!(
                "--edit \"{text}\" has {n} `{MARKER}` markers: use one `{MARKER}` where the learned tokens go (\"a photo of {MARKER} made of gold\")"
            ))),
        }
    }

    /// The words around the learned tokens once this edit is applied to a distribution fitted
    /// with `fitted`.
    pub fn template(&self, fitted: &Template) -> Template {
        match self {
            Self::Append(words) => Template {
                prefix: fitted.prefix.clone(),
                suffix: [fitted.suffix.as_str(), words]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            Self::Placed(template) => template.clone(),
        }
    }

    /// The prompt as a person would read it, with `*` for the learned tokens.
    pub fn describe(&self, fitted: &Template) -> String {
        let t = self.template(fitted);
        [t.prefix.as_str(), "*", t.suffix.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl PromptDistribution {
    /// Re-encodes the K soft prompts with the edit's words around them and re-fits μ, σ over K.
    pub fn edited(
        &self,
        edit: &Edit,
        text: &ClipTextModel,
        tokenizer: &ClipTokenizer,
    ) -> Result<Gaussian> {
        let m = &self.meta;
        let template = edit.template(&m.template());
        let frame = Frame::new(
            text,
            tokenizer,
            &template,
            m.tokens_per_prompt,
            m.position_mode,
        )?;
        let soft = self
            .soft_prompts
            .to_device(text.device())?
            .to_dtype(text.dtype())?;
        let (mu, sigma) = gaussian(&encode(text, &frame, &soft)?.hidden)?;
        Ok(Gaussian { mu, sigma })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted() -> Template {
        Template {
            prefix: String::new(),
            suffix: "in the snow".into(),
        }
    }

    #[test]
    fn plain_words_follow_the_learned_tokens() {
        let e = Edit::parse("  made of gold ").unwrap();
        assert_eq!(e, Edit::Append("made of gold".into()));
        assert_eq!(e.describe(&fitted()), "* in the snow made of gold");
        assert_eq!(e.template(&Template::default()).suffix, "made of gold");
    }

    #[test]
    fn a_marker_places_them() {
        let e = Edit::parse("a photo of * made of gold").unwrap();
        let t = e.template(&fitted());
        assert_eq!(
            (t.prefix.as_str(), t.suffix.as_str()),
            ("a photo of", "made of gold")
        );
        assert_eq!(Edit::parse("pink *").unwrap().describe(&fitted()), "pink *");
    }

    #[test]
    fn two_markers_or_nothing_are_refused() {
        let err = Edit::parse("* and *").unwrap_err().to_string();
        assert!(err.contains("2 `*` markers"), "{err}");
        assert!(Edit::parse("  ").unwrap_err().to_string().contains("empty"));
    }
}
