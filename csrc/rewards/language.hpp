// DeepSeek-R1's language-consistency reward: the share of the chain of thought's words that are in the target
// language.
//
// Words. The text is decoded as UTF-8 (each invalid byte becomes U+FFFD, which is not a letter). A word is a
// maximal run of letters of one script (combining marks continue a word; an apostrophe between two letters
// continues it, so "don't" is one word); digits, punctuation, symbols and spaces separate words. Han, Hiragana
// and Katakana characters are one word each (CJK is counted per character). Hangul, Thai and the alphabetic
// scripts are counted per run. The R1 tags <think>, </think>, <answer>, </answer> are not words.
//
// Languages. zh: Han; ja: Han, Hiragana, Katakana; ko: Hangul; ru: Cyrillic; ar: Arabic; el: Greek; he: Hebrew;
// hi: Devanagari; th: Thai. en, es, de, fr share the Latin script and are told apart per word: a Latin word is
// in the target language when it is on the target's embedded list of common words; otherwise it is not when
// it is on another of the four lists or has a letter outside the target's alphabet (n with tilde for en/de/fr,
// a/o/u umlaut or sharp s for en/es/fr, ...); otherwise (numbers spelled out, names, technical words) it counts
// as the target's. The score is target words / all words, 0.0 when there are no words.
#pragma once

#include <string_view>

namespace r1fast::rewards {

enum class Language : int { kEn, kEs, kDe, kFr, kZh, kJa, kKo, kRu, kAr, kEl, kHe, kHi, kTh, kUnknown };

// The language for an ISO 639-1 code ("en", "zh", ...), kUnknown otherwise.
Language language_from_code(std::string_view code) noexcept;

// The share of words of `text` in `language` (see above); `think_only`: only the <think>...</think> block when
// the text has a <think> tag (to the end if it is not closed).
double language_consistency(std::string_view text, Language language, bool think_only) noexcept;

}  // namespace r1fast::rewards
