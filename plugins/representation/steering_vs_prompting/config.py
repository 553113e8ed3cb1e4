"""Config of steering-vs-prompting (nothing here imports torch)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mi_ideas import IdeaConfig

#: Names of the built-in judges, by what they score (definitions in .judges).
BUILTIN_JUDGES: dict[str, str] = {
    "concept-words": "concept",
    "unsteered-logprob": "fluency",
    "prompt-pmi": "relevance",
}
KINDS: tuple[str, ...] = ("concept", "fluency", "relevance")


class JudgeChoice(BaseModel):
    """Which judge scores each of the three scores (a built-in or one a plugin registered
    through ``mi_ideas_register_judges``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concept: str = Field("concept-words", description="Judge of concept presence.")
    fluency: str = Field("unsteered-logprob", description="Judge of fluency.")
    relevance: str = Field("prompt-pmi", description="Judge of relevance to the prompt.")


class SteeringVsPromptingConfig(IdeaConfig):
    """Settings of steering-vs-prompting (defaults run on the zoo in about ten CPU-seconds;
    the ``docs`` preset, the docs page's numbers, in about a CPU-minute)."""

    concepts: list[str] = Field(
        ["school", "farm"], min_length=1, max_length=32,
        description="Concept words. Each gets its own steering vector and instruction lines; "
        "concept presence counts the word in the continuation. The zoo's instruction lines "
        "name food, place and animal words; places are mentioned early in a zoo story, so "
        "they show within a short continuation (the docs preset runs six place words, "
        "including ones where steering fails).")
    site: str = Field("resid_pre.2", description="Site where the steering vector is added "
                      "(at every position, prompt and generated). With vector=sae_latent it "
                      "must be the dictionary's site.")
    vector: Literal["auto", "diff_means", "sae_latent"] = Field(
        "auto", description="Steering vector: diff_means (mean activation over every "
        "non-BOS position of texts containing the word minus the same over the contrast "
        "texts, see vector_contrast), sae_latent (the decoder direction of the latent whose "
        "mean activation differs most between those two sets; needs --sae), or auto "
        "(sae_latent when --sae is given, else diff_means).")
    vector_contrast: Literal["swap", "texts_without"] = Field(
        "swap", description="What the texts with the word are contrasted with: swap (the same "
        "texts with every occurrence of the word replaced by another word of its kind, a "
        "matched contrast: only the word differs) or texts_without (other texts that do not "
        "contain it, AxBench's DiffMean; on the zoo noisier: the vector then also carries "
        "whatever else differs between the two sets of stories).")
    swap_words: list[str] = Field(
        [], description="Words that replace the concept word in the swapped texts (one drawn "
        "per occurrence); empty: the other words of the zoo generator's word list that holds "
        "it (mi_ideas.data.stories.CONCEPTS: places, foods, animals, ...).")
    sae_latent: int | None = Field(None, ge=0, description="With vector=sae_latent: use this "
                                   "latent for every concept instead of choosing it.")
    vector_texts: int = Field(48, ge=2, le=4096, description="Texts with the word (and "
                              "as many contrast texts) that define the vector, at most; taken "
                              "from the dataset after the prompts.")
    max_length: int = Field(128, ge=8, le=2048, description="Tokens per vector text.")
    n_select: int = Field(8, ge=2, le=2048, description="Prompts on which the coefficient "
                          "is chosen (the first split).")
    n_eval: int = Field(10, ge=2, le=2048, description="Prompts, disjoint from the first "
                        "split, on which every method is scored (the second split).")
    prompt_sentences: int = Field(2, ge=1, le=20, description="Sentences of a dataset text "
                                  "that make a prompt (texts that open with an instruction "
                                  "line, or whose prompt contains a concept word, are skipped).")
    coefficients: list[float] = Field(
        [0.25, 0.5, 1.0, 1.5], min_length=1, max_length=64,
        description="Steering strengths swept on the first split, in units of the mean "
        "activation norm at the site: the added vector is c * norm * unit(v). The one with "
        "the highest mean harmonic score is used on the second split (ties: the smallest).")
    max_new_tokens: int = Field(24, ge=1, le=512, description="Tokens generated per prompt "
                                "(exactly this many; greedy unless do_sample).")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature.")
    batch_size: int = Field(128, ge=1, le=4096, description="Rows (prompt × condition) "
                            "per generation call and per judge forward.")
    concept_instruction: str = Field(
        "A story about {word}.", description="The prompting baseline's instruction; {word} "
        "is the concept word (the zoo corpus's topic line).")
    ignore_instruction: str = Field(
        "Never mention {word}.", description="The instruction to ignore the concept, put at "
        "the start of the prompt (after the concept instruction when both are there: the "
        "zoo corpus's order).")
    instruction_placement: Literal["before", "after_every_message"] = Field(
        "before", description="Where the concept instruction goes: before the prompt, or "
        "re-inserted after every message of a chat-style prompt (messages are the prompt's "
        "lines when it has several, else its sentences).")
    judges: JudgeChoice = Field(default_factory=JudgeChoice, description="Judge per score, "
                                "by name (--set judges.concept=NAME).")
    control: bool = Field(True, description="Also steer along a random direction of the "
                          "same norm at the chosen coefficient (the control: it must show no "
                          "concept effect).")
    n_boot: int = Field(2000, ge=100, le=100000, description="Bootstrap resamples of prompts "
                        "for the intervals.")

    @field_validator("concepts")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        bad = [w for w in v if not re.fullmatch(r"[A-Za-z][A-Za-z'-]*", w)]
        if bad:
            raise ValueError(f"concepts must be single words (letters), not {bad}.")
        if len(set(w.lower() for w in v)) != len(v):
            raise ValueError(f"concepts {v} name a word twice.")
        return v

    @field_validator("coefficients")
    @classmethod
    def _coefficients(cls, v: list[float]) -> list[float]:
        if any(not c > 0 for c in v):
            raise ValueError(f"coefficients must all be > 0 (0, no steering, is always run "
                             f"as the unsteered baseline), got {v}.")
        if len(set(v)) != len(v):
            raise ValueError(f"coefficients {v} repeat a value.")
        return sorted(v)

    @field_validator("concept_instruction", "ignore_instruction")
    @classmethod
    def _template(cls, v: str) -> str:
        if v.count("{word}") != 1 or re.search(r"\{(?!word\})", v):
            raise ValueError(f"an instruction template needs exactly one {{word}} and no other "
                             f"braces, e.g. 'Never mention {{word}}.'; got {v!r}.")
        return v

    @model_validator(mode="after")
    def _sae_latent_needs_sae(self) -> "SteeringVsPromptingConfig":
        if self.sae_latent is not None and self.vector == "diff_means":
            raise ValueError("sae_latent is set but vector=diff_means: set vector=sae_latent "
                             "(with --sae) or drop sae_latent.")
        return self
