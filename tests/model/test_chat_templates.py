#!/usr/bin/env python3
"""test_chat_templates.py — copse's chat rendering against jinja2.

    test_chat_templates.py PATH/TO/chat-tool

copse does not run Jinja: it recognises a template family and renders with
its own code (core/chat.c). This check renders the same conversations with
jinja2 (set up as Hugging Face transformers does: trim_blocks, lstrip_blocks,
raise_exception) and demands byte-equal text:

(a) each family's published template, embedded below, against
    `chat-tool --family NAME`; and the same text fed to
    `chat-tool --template FILE --detect` must be recognised as that family;
(b) the test models' own templates (tokenizer.chat_template, read with the
    gguf package), against `chat-tool --model FILE`, with BOS/EOS texts from
    the model's vocabulary. gemma-3-270m-q4_k_m.gguf carries no template;
    copse falls back to the gemma family from its architecture, so it is
    checked against the published Gemma 3 template and the fallback note.

Conversations the template itself rejects (raise_exception) must be
rejected by copse too.

Exit status: 0 pass, 1 mismatch, 77 when jinja2/gguf or the models are
missing (part (a) still runs and can fail when only the models are missing).
"""
import os
import subprocess
import sys
import tempfile

SKIP = 77

# ---------------------------------------------------------------- published templates
# Copied as published in each model's tokenizer_config.json ("chat_template").

TEMPLATES = {
    # teknium/OpenHermes-2.5-Mistral-7B (the plain ChatML template).
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
        "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
        "{% endif %}"
    ),
    # meta-llama/Meta-Llama-3-8B-Instruct
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
        "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
        "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    # meta-llama/Llama-2-7b-chat-hf
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
        "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
        "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
        "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
        "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
        "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
        "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
        "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    # Mistral tokenizer V1 (Mistral-7B-Instruct-v0.1/v0.2, Mixtral-8x7B-Instruct-v0.1):
    # "<s> [INST] user [/INST] assistant</s> [INST] user [/INST]", the system
    # prompt prepended to the first user message.
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {%- set system_message = messages[0]['content'] %}\n"
        "    {%- set loop_messages = messages[1:] %}\n"
        "{%- else %}\n"
        "    {%- set loop_messages = messages %}\n"
        "{%- endif %}\n"
        "\n"
        "{{- bos_token }}\n"
        "{%- for message in loop_messages %}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
        "        {{- raise_exception('After the optional system message, conversation roles must "
        "alternate user/assistant/user/assistant/...') }}\n"
        "    {%- endif %}\n"
        "    {%- if message['role'] == 'user' %}\n"
        "        {%- if loop.first and system_message is defined %}\n"
        "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
        "        {%- else %}\n"
        "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
        "        {%- endif %}\n"
        "    {%- elif message['role'] == 'assistant' %}\n"
        "        {{- ' ' + message['content'] + eos_token}}\n"
        "    {%- else %}\n"
        "        {{- raise_exception('Only user and assistant roles are supported, with the "
        "exception of an initial optional system message!') }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"
    ),
    # google/gemma-3-*-it
    "gemma": (
        "{{ bos_token }}\n"
        "{%- if messages[0]['role'] == 'system' -%}\n"
        "    {%- if messages[0]['content'] is string -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
        "    {%- else -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
        "    {%- endif -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n"
        "{%- else -%}\n"
        "    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n"
        "{%- endif -%}\n"
        "{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
        "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
        "    {%- endif -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n"
        "        {%- set role = \"model\" -%}\n"
        "    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n"
        "    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {%- if message['content'] is string -%}\n"
        "        {{ message['content'] | trim }}\n"
        "    {%- elif message['content'] is iterable -%}\n"
        "        {%- for item in message['content'] -%}\n"
        "            {%- if item['type'] == 'image' -%}\n"
        "                {{ '<start_of_image>' }}\n"
        "            {%- elif item['type'] == 'text' -%}\n"
        "                {{ item['text'] | trim }}\n"
        "            {%- endif -%}\n"
        "        {%- endfor -%}\n"
        "    {%- else -%}\n"
        "        {{ raise_exception(\"Invalid content type\") }}\n"
        "    {%- endif -%}\n"
        "    {{ '<end_of_turn>\\n' }}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        "    {{'<start_of_turn>model\\n'}}\n"
        "{%- endif -%}\n"
    ),
    # HuggingFaceH4/zephyr-7b-beta
    "zephyr": (
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
        "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' "
        "+ message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
        "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
        "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
    ),
}

# BOS/EOS texts of a typical model of each family.
SPECIALS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama2": ("<s>", "</s>"),
    "mistral": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "zephyr": ("<s>", "</s>"),
}

# ---------------------------------------------------------------- conversations

def M(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]

CONVERSATIONS = [
    ("system+user+assistant+user",
     M(("system", "You are terse."), ("user", "Hi!"), ("assistant", "Hello."), ("user", "What is 2+2?"))),
    ("user only", M(("user", "Tell me a joke."))),
    ("user+assistant", M(("user", "Name a colour."), ("assistant", "Blue."))),
    ("white space and unicode",
     M(("system", "  Be brief.  \n"), ("user", "\n  Hi there \t"), ("assistant", " Hey\u00a0"),
       ("user", "\u3000Pourquoi le ciel est-il bleu ? 空\u2003"))),
    ("quotes, braces, newlines",
     M(("system", "Reply in JSON: {\"a\": 1}"), ("user", "Say 'hi' and \"bye\"\n\n{{ not jinja }}\n- a\n- b"),
       ("assistant", "{% raw %}ok{% endraw %}"), ("user", "again\\n"))),
    ("system only then user",
     M(("system", "S"), ("user", "U"))),
    # Templates that demand alternation reject these; ChatML/Llama 3/Zephyr render them.
    ("two users in a row", M(("user", "a"), ("user", "b"))),
    ("late system", M(("user", "a"), ("assistant", "b"), ("system", "c"), ("user", "d"))),
    ("starts with assistant", M(("assistant", "a"), ("user", "b"))),
]

# ---------------------------------------------------------------- helpers

failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg)


def jinja_env():
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env


def render_jinja(env, template, messages, gen, bos, eos):
    """Rendered text, or None if the template raised."""
    import jinja2
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
    except jinja2.exceptions.TemplateError:
        return None


def run_tool(tool, source_args, messages, gen):
    args = [tool] + source_args + ([] if gen else ["--no-generation-prompt"])
    for m in messages:
        args += [m["role"], m["content"]]
    p = subprocess.run(args, capture_output=True)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def compare(label, template, tool, source_args, bos, eos, env):
    """Every conversation, with and without a generation prompt."""
    n = 0
    for name, msgs in CONVERSATIONS:
        for gen in (True, False):
            want = render_jinja(env, template, msgs, gen, bos, eos)
            rc, got, err = run_tool(tool, source_args, msgs, gen)
            what = f"{label} / {name} / gen={gen}"
            n += 1
            if want is None:
                if rc != 1 or "EINVAL" not in err:
                    fail(f"{what}: the template raises, copse gave rc={rc} {got!r} {err.strip()!r}")
            elif rc != 0:
                fail(f"{what}: copse failed: {err.strip()}")
            elif got != want:
                fail(f"{what}:\n  jinja2: {want!r}\n  copse:  {got!r}")
    return n


def read_model(path):
    """(template or None, bos text, eos text, architecture) with the gguf package."""
    from gguf import GGUFReader
    r = GGUFReader(path)

    def field(key):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    toks = r.fields["tokenizer.ggml.tokens"]

    def tok(key):
        i = field(key)
        return "" if i is None else bytes(toks.parts[toks.data[i]]).decode("utf-8")

    return (field("tokenizer.chat_template"), tok("tokenizer.ggml.bos_token_id"),
            tok("tokenizer.ggml.eos_token_id"), field("general.architecture"))

# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    tool = sys.argv[1]
    try:
        import jinja2  # noqa: F401
    except ImportError:
        print("jinja2 is not installed: skipping")
        return SKIP
    env = jinja_env()

    # (a) published templates: detection and rendering.
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for family, template in TEMPLATES.items():
            path = os.path.join(tmp, family + ".jinja")
            with open(path, "w", encoding="utf-8") as f:
                f.write(template)
            p = subprocess.run([tool, "--template", path, "--detect"], capture_output=True, text=True)
            if p.returncode != 0 or p.stdout.strip() != family:
                fail(f"detect {family}: got {p.stdout.strip()!r} {p.stderr.strip()!r}")
            bos, eos = SPECIALS[family]
            checked += compare(family, template, tool, ["--family", family, "--bos", bos, "--eos", eos],
                               bos, eos, env)
    print(f"published templates: {checked} renderings compared")

    # (b) the test models' own templates.
    model_dir = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
    models = [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "chatml", None),
        ("gemma-3-270m-q4_k_m.gguf", "gemma", "gemma"),  # no template in the file
    ]
    have_models = True
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("gguf package missing: skipping the model part")
        have_models = False
    for fname, family, fallback_template in models if have_models else []:
        path = os.path.join(model_dir, fname)
        if not os.path.exists(path):
            print(f"{path}: missing, skipped")
            have_models = False
            continue
        template, bos, eos, arch = read_model(path)
        p = subprocess.run([tool, "--model", path, "--detect"], capture_output=True, text=True)
        if p.stdout.strip() != family:
            fail(f"{fname}: detected {p.stdout.strip()!r}, want {family!r}")
        if template is None:
            if fallback_template is None:
                fail(f"{fname}: expected a chat template in the file")
                continue
            note = f"model has no chat template; using {family} (from architecture '{arch}')"
            if note not in p.stderr:
                fail(f"{fname}: fallback note missing: {p.stderr.strip()!r}")
            template = TEMPLATES[fallback_template]
            label = f"{fname} (no template; published {fallback_template})"
        else:
            label = f"{fname} (own template)"
        n = compare(label, template, tool, ["--model", path], bos, eos, env)
        print(f"{label}: {n} renderings compared (bos {bos!r}, eos {eos!r})")

    if failures:
        print(f"{failures} failure(s)")
        return 1
    if not have_models:
        print("models missing: model part skipped")
        return SKIP
    print("all renderings match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
