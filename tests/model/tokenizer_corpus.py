"""tokenizer_corpus.py — a deterministic corpus of test strings for the
tokenizer reference comparison.

corpus() returns a list of bytes objects (well over 1,000): plain English,
code in several languages, numbers of every length, whitespace runs, CRLF,
many scripts, emoji (ZWJ sequences, skin tones, flags), combining marks,
special-token text of both test models, random mixtures of all of these,
and invalid UTF-8 (truncated sequences, stray continuation bytes, overlongs,
surrogates, bytes that never occur in UTF-8). The caller hands the reference
bytes.decode("utf-8", errors="replace") and copse the raw bytes.
"""

import random

ENGLISH = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "I'm sure you'll agree we've done what we'd planned; they're happy.",
    "DON'T SHOUT! Why'd you do THAT?",
    "e.g. i.e. etc. Mr. Smith vs. Dr. Jones",
    "user@example.com https://example.org/path?q=1&r=two#frag",
    "   leading spaces and trailing   ",
    "Tabs\tbetween\twords",
    "Line one\nLine two\n\nLine four\n\n\n",
    "Windows\r\nline\r\nendings\r\n",
    "Hyphen-ated, semi;colon: (parens) [brackets] {braces} <angles>",
    "“Curly quotes” and ‘single’ ones — em dash – en dash … ellipsis",
    "A",
    " ",
    "",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "SmolLM2 is a family of compact language models.",
    "Gemma 3 models are multimodal, handling text and image input.",
]

CODE = [
    'def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n',
    'for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n',
    '#include <stdio.h>\nint main(void) { printf("hi\\n"); return 0; }\n',
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", v);\n}\n',
    'const f = async (x) => { await fetch(`/api/${x}`); };',
    'SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;',
    '<div class="a b">\n  <p>Hello &amp; goodbye</p>\n</div>',
    '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b"}}',
    'x = [i**2 for i in range(100) if i % 3 == 0]  # comment',
    'if err != nil {\n\t\treturn fmt.Errorf("wrap: %w", err)\n\t}',
    '    indented four\n        indented eight\n            twelve',
    'public static void main(String[] args) throws IOException {}',
    '$ ls -la | grep "\\.py$" && echo done || exit 1',
    'a+=1;b-=2;c*=3;d/=4;e%=5;f<<=6;g>>=7;h&=8;i|=9;j^=10;',
    '!!!???...,,,;;;:::---___===+++***&&&|||',
    '\\begin{equation} E = mc^2 \\end{equation}',
    'matrix[i][j] = matrix[i-1][j-1] + 1 if s[i] == t[j] else 0',
    '// TODO(someone): fix this\n/* block\n * comment */',
]

NUMBERS = ["0", "7", "42", "123", "1234", "12345", "123456", "1234567", "3.14159", "-0.001",
           "1e-9", "6.02214076e23", "1,000,000", "2024-01-31", "12:34:56", "0xDEADBEEF",
           "0b101010", "v1.2.3", "192.168.0.1", "+1 (555) 123-4567", "½ ¾ ⅓", "²³¹", "١٢٣ ٤٥٦",
           "१२३४", "一二三", "Ⅷ Ⅻ", "①②③"]

SCRIPTS = [
    "café naïve résumé jalapeño façade Ångström São Paulo Zürich",
    "Ελληνικά: Καλημέρα κόσμε, τι κάνεις;",
    "Русский текст: Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Українська: Ґанок, їжак, є.",
    "العربية: مرحبا بالعالم، كيف حالك؟",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया, आप कैसे हैं?",
    "বাংলা: হ্যালো বিশ্ব",
    "தமிழ்: வணக்கம் உலகம்",
    "ไทย: สวัสดีชาวโลก",
    "中文：你好，世界！我爱自然语言处理。",
    "日本語：こんにちは世界。カタカナとひらがな、漢字。",
    "한국어: 안녕하세요 세계! 반갑습니다.",
    "Tiếng Việt: Xin chào thế giới",
    "Türkçe: İstanbul'da ığdır şehir",
    "Polski: Zażółć gęślą jaźń",
    "Deutsch: Straße, Größe, Übermäßig",
    "ქართული: გამარჯობა",
    "Հայերեն: Բարեւ",
    "አማርኛ: ሰላም",
    "Ελλάδα 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝐁𝐨𝐥𝐝",
]

EMOJI = [
    "😀", "😀😃😄", "👍🏽", "👋🏿 hi", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇫🇷🇯🇵", "❤️", "🧑🏻‍💻 coding",
    "✨🎉🎊", "🤷‍♀️", "🫠🫶", "1️⃣ 2️⃣", "☃", "♥♦♣♠", "🀄🃏", "𓀀𓁐",
]

COMBINING = [
    "e\u0301 a\u0300 o\u0308 n\u0303", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334algo",
    "\u0915\u094d\u0937", "a\u200db", "zero\u200bwidth", "bom\ufeffhere", "soft\u00adhyphen",
    "nbsp\u00a0here", "ideographic\u3000space", "thin\u2009space", "line\u2028sep", "para\u2029sep",
    "nel\u0085here", "mongolian\u180evs", "unit\u001fsep\u001erec", "\u000bvt\u000cff",
    "ctrl\u0001\u0002\u007f", "nul\u0000byte", "rtl\u202eoverride\u202c", "\ufffd replacement",
    "private\ue000use", "noncharacter\uffff", "max\U0010ffff",
    "typed\u2581lower\u2581eighth", "\u2581", "\u2581\u2581start", "<0x41> <0xFF> \u0120G",
]

SPECIALS = [
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<repo_name>foo<file_sep>bar",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<bos><bos>hello<eos>",
    "<start_of_image>", "<end_of_image>", "[multimodal]", "<unused0><unused42>",
    "text<|im_start|>text", "<|im_start|", "|im_start|>", "<<|im_end|>>",
    "<start_of_turn", "<start_of_turn><start_of_turn>", "  <eos>  ", "<h1>Title</h1>",
    "<|im_start|><start_of_turn><bos><|endoftext|>",
]

WHITESPACE = [" ", "  ", "   ", "    ", " " * 17, "\t", "\t\t", "\t\t\t\t", "\n", "\n\n", "\n" * 5,
              "\r\n", "\r\n\r\n", " \n ", "\t \n \t", "\n \n", "  \n\n  ", "\r", "\r\r\n"]

INVALID = [
    b"\xff", b"\xfe\xff", b"\x80", b"\x80\x80abc", b"abc\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(",
    b"\xf0\x9f\x98", b"\xf0\x9f\x98 smile", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80",
    b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",
    b"Hello \xff world", b"caf\xe9", b"\xe4\xbd\xa0\xe5\xa5", b"<|im_start|>\xffuser",
    b"<start_of_turn>\x80model", b"\x00\xff\x00", b"\xef\xbf\xbd\xef\xbf",
    bytes(range(128, 256)), bytes(range(256)),
]


def _rng_text(rng, pools):
    parts = []
    for _ in range(rng.randint(1, 6)):
        pool = rng.choice(pools)
        s = rng.choice(pool)
        if rng.random() < 0.3 and len(s) > 3:
            a = rng.randrange(len(s))
            s = s[a:a + rng.randint(1, 12)]
        parts.append(s)
        parts.append(rng.choice(["", " ", "  ", "\n", "\t", ", ", "\r\n", ""]))
    return "".join(parts)


def _numbers(rng):
    out = []
    for n in range(1, 41):
        out.append("".join(rng.choice("0123456789") for _ in range(n)))
        out.append(" " + out[-1])
        out.append("x" + out[-2] + "y")
    for _ in range(40):
        out.append("%d.%d" % (rng.randrange(10 ** rng.randint(1, 9)), rng.randrange(1000)))
    return out


def _random_unicode(rng, n):
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff),
              (0x900, 0x97f), (0x0e00, 0x0e7f), (0x1100, 0x11ff), (0x2000, 0x206f), (0x2190, 0x2bff),
              (0x3000, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xf900, 0xfaff), (0xfe00, 0xfe0f),
              (0xff00, 0xffef), (0x1f300, 0x1faff), (0x1d400, 0x1d7ff), (0x20000, 0x2a6df)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def corpus():
    rng = random.Random(20261122)
    texts = []
    for pool in (ENGLISH, CODE, NUMBERS, SCRIPTS, EMOJI, COMBINING, SPECIALS, WHITESPACE):
        texts += pool
    texts += _numbers(rng)
    # whitespace runs around words, every mix
    for ws in WHITESPACE:
        texts += ["a" + ws + "b", ws + "word", "word" + ws, ws + "<|im_end|>" + ws, "x" + ws + "1"]
    # every pair of pools, glued
    pools = [ENGLISH, CODE, NUMBERS, SCRIPTS, EMOJI, COMBINING, SPECIALS, WHITESPACE]
    for _ in range(600):
        texts.append(_rng_text(rng, pools))
    for n in (1, 2, 3, 5, 8, 13, 40, 100):
        for _ in range(12):
            texts.append(_random_unicode(rng, n))
    # long inputs
    texts += ["a" * 3000, " " * 2000, "\n" * 500, "😀" * 300, "ab" * 1500, "1" * 1000,
              "The quick brown fox. " * 200, "".join(SCRIPTS) * 3, "\t \n" * 300]
    out = [t.encode("utf-8") for t in texts]
    # invalid UTF-8, alone and spliced into valid text
    out += INVALID
    for _ in range(120):
        base = rng.choice(texts).encode("utf-8")
        bad = rng.choice(INVALID)
        at = rng.randrange(len(base) + 1)
        out.append(base[:at] + bad + base[at:])
    for _ in range(60):  # valid text cut at a random byte (often inside a character)
        base = rng.choice(SCRIPTS + EMOJI).encode("utf-8")
        out.append(base[:rng.randrange(1, len(base) + 1)])
    return out


if __name__ == "__main__":
    c = corpus()
    print(len(c), "strings,", sum(map(len, c)), "bytes")
