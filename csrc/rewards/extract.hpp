// Final-answer extraction, one path for the gold and the completion. Linear in the text's length, whatever its
// content: the tags are found in the whole text, the answer in the last 32 KB of its region. Where the answer is
// looked for, first hit wins, inside the last <answer>...</answer> block when there is one (an unclosed last
// <answer> runs to the end), else after the last </think> (nothing when a <think> is never closed), else in the
// whole text:
//   1. \boxed{...} / \fbox{...}: the last one, together with the boxes right before it that only punctuation,
//      math delimiters, `and` / `or` separate from it (several boxes are a list of answers: "1, 2");
//   2. `#### x` (GSM8K): the rest of the line after the last ####;
//   3. `answer is x` / `Answer: x` (case-insensitive, the last one; covers Minerva's `Final Answer: The final answer
//      is x. I hope it is correct.`): the first math span ($..$, \(..\), \[..\]) of that sentence, else the
//      sentence up to its end;
//   4. the last math span ($..$, $$..$$, \(..\), \[..\]);
//   5. the whole text, when it is short and on one line (a bare answer: "42", "x = 3", "(B)").
// Whatever is found is trimmed of spaces, a trailing period, surrounding $..$, \(..\), \[..\] and **bold**, a
// leading choice marker ("(B) 5" -> "B"), filler words before it ("therefore 5") and trailing plain words (units:
// "12 dollars" -> "12"), unless a word would change the value ("5 thousand", "3 squared": kept, so it is text).
#pragma once

#include <string>
#include <string_view>

namespace r1fast::rewards {

// The final answer of `text`; several boxed answers joined by ", "; empty when none is found.
std::string extract_answer(std::string_view text);

}  // namespace r1fast::rewards
