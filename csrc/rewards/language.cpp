#include "rewards/language.hpp"

#include <array>

#include "rewards/utf8.hpp"

namespace r1fast::rewards {

namespace {

enum class Script : std::uint8_t {
  kNone,  // not a letter: separates words
  kMark,  // combining mark: continues the current word
  kLatin,
  kGreek,
  kCyrillic,
  kHebrew,
  kArabic,
  kDevanagari,
  kThai,
  kHangul,
  kHan,
  kHiragana,
  kKatakana,
  kOther,  // a letter of a script not listed
};

Script script_of(char32_t c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return Script::kLatin;
  if (c < 0xC0) return (c == 0xAA || c == 0xBA) ? Script::kLatin : Script::kNone;
  if (c <= 0x24F) return (c == 0xD7 || c == 0xF7) ? Script::kNone : Script::kLatin;
  if (c >= 0x300 && c <= 0x36F) return Script::kMark;
  if (c >= 0x370 && c <= 0x3FF) return (c == 0x37E || c == 0x387) ? Script::kNone : Script::kGreek;
  if (c >= 0x400 && c <= 0x52F) return (c >= 0x483 && c <= 0x489) ? Script::kMark : Script::kCyrillic;
  if (c >= 0x591 && c <= 0x5C7) return Script::kMark;
  if (c >= 0x5D0 && c <= 0x5F2) return Script::kHebrew;
  if (c >= 0x600 && c <= 0x6FF) {
    if ((c >= 0x610 && c <= 0x61A) || (c >= 0x64B && c <= 0x65F) || c == 0x670 || (c >= 0x6D6 && c <= 0x6ED)) {
      return Script::kMark;
    }
    if ((c >= 0x620 && c <= 0x64A) || (c >= 0x66E && c <= 0x6D3) || c == 0x6D5 || (c >= 0x6FA && c <= 0x6FF)) {
      return Script::kArabic;
    }
    return Script::kNone;  // Arabic punctuation and digits
  }
  if ((c >= 0x750 && c <= 0x77F) || (c >= 0xFB50 && c <= 0xFDFF) || (c >= 0xFE70 && c <= 0xFEFF)) {
    return c == 0xFEFF ? Script::kNone : Script::kArabic;
  }
  if (c >= 0x900 && c <= 0x97F) {
    if (c >= 0x966 && c <= 0x96F) return Script::kNone;  // digits
    if ((c >= 0x900 && c <= 0x903) || (c >= 0x93A && c <= 0x94F) || (c >= 0x951 && c <= 0x957) || c == 0x962 ||
        c == 0x963) {
      return Script::kMark;
    }
    return (c == 0x964 || c == 0x965) ? Script::kNone : Script::kDevanagari;
  }
  if (c >= 0xE01 && c <= 0xE5B) {
    if (c >= 0xE50) return Script::kNone;
    return (c == 0xE31 || (c >= 0xE34 && c <= 0xE3A) || (c >= 0xE47 && c <= 0xE4E)) ? Script::kMark : Script::kThai;
  }
  if ((c >= 0x1100 && c <= 0x11FF) || (c >= 0x3130 && c <= 0x318F) || (c >= 0xAC00 && c <= 0xD7AF)) {
    return Script::kHangul;
  }
  if (c >= 0x1E00 && c <= 0x1EFF) return Script::kLatin;
  if (c >= 0x1F00 && c <= 0x1FFF) return Script::kGreek;
  if (c >= 0x3040 && c <= 0x309F) return (c >= 0x3099 && c <= 0x309C) ? Script::kMark : Script::kHiragana;
  if ((c >= 0x30A0 && c <= 0x30FF) || (c >= 0x31F0 && c <= 0x31FF) || (c >= 0xFF66 && c <= 0xFF9F)) {
    return (c == 0x30A0 || c == 0x30FB) ? Script::kNone : Script::kKatakana;
  }
  if ((c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) ||
      (c >= 0x20000 && c <= 0x3134F)) {
    return Script::kHan;
  }
  if (c >= 0xFF21 && c <= 0xFF5A && !(c > 0xFF3A && c < 0xFF41)) return Script::kLatin;  // full-width letters
  if (c >= 0x2000 && c <= 0x2BFF) return Script::kNone;  // punctuation, symbols, arrows, math operators
  if (c >= 0x3000 && c <= 0x303F) return Script::kNone;  // CJK punctuation
  if (c >= 0xFF00 && c <= 0xFF65) return Script::kNone;  // full-width punctuation and digits
  if (c == kReplacement || (c >= 0xE000 && c <= 0xF8FF) || c >= 0x1F000) return Script::kNone;
  return Script::kOther;
}

bool per_character(Script s) noexcept { return s == Script::kHan || s == Script::kHiragana || s == Script::kKatakana; }

bool in_target_script(Script s, Language lang) noexcept {
  switch (lang) {
    case Language::kEn:
    case Language::kEs:
    case Language::kDe:
    case Language::kFr:
      return s == Script::kLatin;
    case Language::kZh:
      return s == Script::kHan;
    case Language::kJa:
      return s == Script::kHan || s == Script::kHiragana || s == Script::kKatakana;
    case Language::kKo:
      return s == Script::kHangul;
    case Language::kRu:
      return s == Script::kCyrillic;
    case Language::kAr:
      return s == Script::kArabic;
    case Language::kEl:
      return s == Script::kGreek;
    case Language::kHe:
      return s == Script::kHebrew;
    case Language::kHi:
      return s == Script::kDevanagari;
    case Language::kTh:
      return s == Script::kThai;
    case Language::kUnknown:
      return false;
  }
  return false;
}

char32_t latin_lower(char32_t c) noexcept {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) return c | 1;
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c % 2 == 1) ? c + 1 : c;
  if (c == 0x178) return 0xFF;
  return c;
}

// Common words of each Latin-script language (lowercase). A word valid in two languages is on both lists.
// (Words such as "a", "total", "solution" that are common to several languages are on none: they are neutral.)
constexpr std::array<std::string_view, 4> kWordLists = {
    // en
    "the and of to is that it for with as was on be are this by we have from or not which but can so if then there "
    "their they what when will would all an at has been were one two three four five each our you he she its these "
    "those than also into only other some such how find let number sum first second next answer solve equation "
    "value therefore thus because since now need get using use step both must divide multiply equal equals gives "
    "given means check wait between where who any more most many much do does did no yes just like same square "
    "in out up down over why could should may might let's don't it's i'm we're that's here after before again "
    "right left half times plus minus less greater each every per",
    // es
    "el la los las de del que y en un una es por con para como más pero su sus se lo al este esta estos estas son "
    "entonces número ecuación valor respuesta tenemos podemos cada también porque cuando donde sobre entre hay ser "
    "está están así dos tres cuatro cinco primero segundo ahora luego sumar multiplicar igual si no tiene hacer cual "
    "cuál paso calcular necesitamos dividir ya muy todo todos otra otro menos mayor menor mitad veces hasta desde "
    "porque qué cómo le les nos o u pues será fue ese esa eso tanto",
    // de
    "der die das und ist nicht ein eine einen einem einer zu den dem des mit von auf für sich auch es wir als wie "
    "oder aber wenn dann so dass noch nach bei aus werden wird sind haben kann können diese dieser dieses also "
    "jetzt zwei drei vier fünf erste zweite gleich zahl gleichung lösung antwort wert berechnen schritt müssen "
    "ergibt durch insgesamt jede jeder nun schon über unter zwischen weil daher somit im ich was will an am in "
    "ob hier sein seine ihre wurde mal minus plus hälfte mehr weniger größer kleiner",
    // fr
    "le la les de des du un une et est en que qui dans pour pas sur au aux avec ce cette ces il elle nous vous ils "
    "sont par plus mais ou où donc alors comme si nombre équation valeur réponse calculer étape deux trois quatre "
    "cinq premier deuxième maintenant ensuite égal égale chaque aussi être avons avoir fait faire peut peux leur "
    "très tout tous entre parce quand ainsi soit on se sa son ses je c'est d'un d'une l'équation qu'il moins "
    "moitié fois puis leurs notre était sera",
};

// Lowercase non-ASCII letters of the target's alphabet (as code points), per Latin-script language.
constexpr std::array<std::u32string_view, 4> kAlphabetCodePoints = {
    U"",
    U"\u00e1\u00e9\u00ed\u00f3\u00fa\u00fc\u00f1",
    U"\u00e4\u00f6\u00fc\u00df",
    U"\u00e0\u00e2\u00e6\u00e7\u00e9\u00e8\u00ea\u00eb\u00ee\u00ef\u00f4\u0153\u00f9\u00fb\u00fc\u00ff",
};

std::uint64_t fnv1a(std::string_view w) noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : w) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

// All listed words in one open-addressing table: word -> bit mask of the languages listing it.
struct WordTable {
  struct Slot {
    std::string_view word;
    std::uint8_t mask = 0;
  };
  static constexpr std::size_t kSlots = 2048;  // > 3x the words listed
  std::array<Slot, kSlots> slots{};

  std::uint8_t find(std::string_view w) const noexcept {
    for (std::size_t k = fnv1a(w) % kSlots;; k = (k + 1) % kSlots) {
      if (slots[k].mask == 0) return 0;
      if (slots[k].word == w) return slots[k].mask;
    }
  }
  void add(std::string_view w, std::uint8_t bit) noexcept {
    for (std::size_t k = fnv1a(w) % kSlots;; k = (k + 1) % kSlots) {
      if (slots[k].mask == 0 || slots[k].word == w) {
        slots[k].word = w;
        slots[k].mask = static_cast<std::uint8_t>(slots[k].mask | bit);
        return;
      }
    }
  }
};

// Built once, on first use (thread-safe static initialisation), never modified.
const WordTable& word_table() noexcept {
  static const WordTable table = [] {
    WordTable t;
    for (std::size_t l = 0; l < kWordLists.size(); ++l) {
      std::string_view list = kWordLists[l];
      while (!list.empty()) {
        const std::size_t sp = list.find(' ');
        const std::string_view w = list.substr(0, sp);
        if (!w.empty()) t.add(w, static_cast<std::uint8_t>(1u << l));
        if (sp == std::string_view::npos) break;
        list.remove_prefix(sp + 1);
      }
    }
    return t;
  }();
  return table;
}

// Whether a Latin-script word (lowercased UTF-8) belongs to the Latin-script target language `t` (0..3);
// `foreign_letter`: the word has a letter outside the target's alphabet.
bool latin_word_in_target(std::string_view w, std::size_t t, bool foreign_letter) noexcept {
  const std::uint8_t mask = word_table().find(w);
  if ((mask & (1u << t)) != 0) return true;
  if (mask != 0) return false;
  return !foreign_letter;
}

std::string_view think_block(std::string_view text) noexcept {
  const std::size_t open = text.find("<think>");
  if (open == std::string_view::npos) return text;
  const std::size_t from = open + 7;
  const std::size_t close = text.find("</think>", from);
  return close == std::string_view::npos ? text.substr(from) : text.substr(from, close - from);
}

}  // namespace

Language language_from_code(std::string_view code) noexcept {
  static constexpr std::array<std::string_view, 13> kCodes = {"en", "es", "de", "fr", "zh", "ja", "ko",
                                                              "ru", "ar", "el", "he", "hi", "th"};
  for (std::size_t k = 0; k < kCodes.size(); ++k) {
    if (kCodes[k] == code) return static_cast<Language>(k);
  }
  return Language::kUnknown;
}

double language_consistency(std::string_view text, Language language, bool think_only) noexcept {
  if (language == Language::kUnknown) return 0.0;
  try {
    if (think_only) text = think_block(text);
    const bool latin_lists = language == Language::kEn || language == Language::kEs || language == Language::kDe ||
                             language == Language::kFr;
    const auto target = static_cast<std::size_t>(language);
    std::size_t words = 0;
    std::size_t in_target = 0;
    Script current = Script::kNone;  // script of the word being read, kNone between words
    // The current Latin word, lowercased (only with latin_lists); words longer than the buffer are on no list.
    char lower[64];
    std::size_t lower_len = 0;
    bool foreign_letter = false;
    bool pending_apostrophe = false;
    const std::u32string_view alphabet = latin_lists ? kAlphabetCodePoints[target] : std::u32string_view();
    auto push_lower = [&](char32_t c) {
      if (c >= 0x80 && alphabet.find(c) == std::u32string_view::npos && !(c >= 0x300 && c <= 0x36F)) {
        foreign_letter = true;
      }
      char buf[4];
      std::size_t n = 0;
      if (c < 0x80) {
        buf[n++] = static_cast<char>(c);
      } else if (c < 0x800) {
        buf[n++] = static_cast<char>(0xC0 | (c >> 6));
        buf[n++] = static_cast<char>(0x80 | (c & 0x3F));
      } else {
        buf[n++] = static_cast<char>(0xE0 | ((c >> 12) & 0x0F));
        buf[n++] = static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        buf[n++] = static_cast<char>(0x80 | (c & 0x3F));
      }
      for (std::size_t k = 0; k < n; ++k) {
        if (lower_len < sizeof(lower)) lower[lower_len] = buf[k];
        ++lower_len;
      }
    };
    auto finish_word = [&]() {
      if (current == Script::kNone) return;
      ++words;
      if (current == Script::kLatin && latin_lists) {
        const std::string_view w = lower_len <= sizeof(lower) ? std::string_view(lower, lower_len) : std::string_view();
        if (latin_word_in_target(w, target, foreign_letter)) ++in_target;
      } else if (in_target_script(current, language)) {
        ++in_target;
      }
      current = Script::kNone;
      lower_len = 0;
      foreign_letter = false;
    };
    std::size_t i = 0;
    while (i < text.size()) {
      if (text[i] == '<') {
        // The R1 template's tags are markup, not words.
        bool tag = false;
        for (std::string_view t : {"<think>", "</think>", "<answer>", "</answer>"}) {
          if (text.compare(i, t.size(), t) == 0) {
            i += t.size();
            tag = true;
            break;
          }
        }
        if (tag) {
          pending_apostrophe = false;
          finish_word();
          continue;
        }
      }
      const char32_t c = static_cast<unsigned char>(text[i]) < 0x80 ? static_cast<unsigned char>(text[i++])
                                                                     : decode_utf8(text, i);
      Script s = script_of(c);
      if (s == Script::kMark) {
        if (current == Script::kLatin && latin_lists) push_lower(c);
        continue;  // a mark continues the word (or is ignored between words)
      }
      if (c == '\'' || c == 0x2019) {
        // An apostrophe continues a word only between two letters of it.
        if (current != Script::kNone && !pending_apostrophe && !per_character(current)) {
          pending_apostrophe = true;
          continue;
        }
        s = Script::kNone;
      }
      if (pending_apostrophe) {
        pending_apostrophe = false;
        if (s == current) {
          if (current == Script::kLatin && latin_lists) push_lower('\'');
        } else {
          finish_word();
        }
      }
      if (s == Script::kNone) {
        finish_word();
        continue;
      }
      if (s != current || per_character(s)) finish_word();
      current = s;
      if (s == Script::kLatin && latin_lists) push_lower(latin_lower(c));
    }
    finish_word();
    return words == 0 ? 0.0 : static_cast<double>(in_target) / static_cast<double>(words);
  } catch (...) {
    return 0.0;
  }
}

}  // namespace r1fast::rewards
