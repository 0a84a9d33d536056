#!/usr/bin/env python3
"""Golden chat-template renders made by Python jinja2, set up exactly as HF transformers 5.x sets
it up in utils/chat_template_utils.py (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loop controls, the `{% generation %}` tracker, its own tojson, raise_exception, strftime_now), and
driven as render_jinja_template drives it (continue_final_message, assistant spans).

usage: python3 tools/chat_template_goldens.py CONVERSATIONS.json OUT.json [--features FEATURES.json] TEMPLATE_DIR...
Every *.jinja under the folders is rendered over every case (conversation x options) that the
matrix below makes. FEATURES.json (a list of {name, template, vars}) adds plain renders of small
templates that exercise one feature each; they go to "features" with output or error. OUT.json: {"jinja2": version, "now": [y, m, d, H, M, S], "cases": [...]}
with one case per render: template (file name), conversation, the inputs as JSON text (messages,
tools, documents, kwargs: key order kept), add_generation_prompt, continue_final_message and
either "output" plus "spans" (the generation spans, in code points as Python indexes str) or
"error" (str(exception)) and "error_type".
strftime_now is pinned to the "now" above so that renders are reproducible.
"""
import copy
import datetime
import json
import os
import re
import sys
from contextlib import contextmanager

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = datetime.datetime(2026, 3, 14, 15, 9, 26)
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def compile_template(source):
    """transformers' _compile_jinja_template, with strftime_now pinned to NOW."""

    class AssistantTracker(Extension):
        tags = {"generation"}

        def __init__(self, environment):
            super().__init__(environment)
            environment.extend(activate_tracker=self.activate_tracker)
            self._rendered_blocks = None
            self._generation_indices = None

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation_support(self, context, caller):
            rv = caller()
            if self.is_active():
                start_index = len("".join(self._rendered_blocks))
                end_index = start_index + len(rv)
                self._generation_indices.append((start_index, end_index))
            return rv

        def is_active(self):
            return self._rendered_blocks or self._generation_indices

        @contextmanager
        def activate_tracker(self, rendered_blocks, generation_indices):
            try:
                if self.is_active():
                    raise ValueError("AssistantTracker should not be reused before closed")
                self._rendered_blocks = rendered_blocks
                self._generation_indices = generation_indices
                yield
            finally:
                self._rendered_blocks = None
                self._generation_indices = None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def render(compiled, messages, tools, documents, add_generation_prompt, continue_final_message, track, kwargs):
    """render_jinja_template for one conversation."""
    tag = "CONTINUE_FINAL_MESSAGE_TAG "
    chat = messages
    final_message = None
    if continue_final_message:
        chat = copy.deepcopy(chat)
        final_message = chat[-1]["content"]
        if isinstance(final_message, (list, tuple)):
            for block in reversed(final_message):
                if "text" in block:
                    final_message = block["text"]
                    block["text"] = block["text"] + tag
                    break
            else:
                raise ValueError("continue_final_message is set but we could not find any text to continue in the final message!")
        else:
            chat[-1]["content"] = chat[-1]["content"] + tag
    variables = dict(messages=chat, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt, **kwargs)
    spans = []
    if track:
        blocks = []
        with compiled.environment.activate_tracker(blocks, spans):
            for block in compiled.generate(**variables):
                blocks.append(block)
            text = "".join(blocks)
    else:
        text = compiled.render(**variables)
    if continue_final_message:
        if final_message.strip() not in text or tag.strip() not in text:
            raise ValueError("continue_final_message is set but the final message does not appear in the chat after "
                             "applying the chat template! This can happen if the chat template deletes portions of "
                             "the final message. Please verify the chat template and final message in your chat to "
                             "ensure they are compatible.")
        loc = text.rindex(tag.strip())
        if text[loc:loc + len(tag)] == tag:
            text = text[:loc]
        else:
            text = text[:loc].rstrip()
    return text, spans


def cases_for(name, messages, data):
    """The option matrix for one conversation."""
    ends_with_assistant = len(messages) > 0 and messages[-1]["role"] == "assistant"
    with_tools = name in ("system_two_turns", "single_user", "tool_call_dict_arguments",
                          "tool_call_string_arguments", "parallel_tool_calls")
    out = [dict(add_generation_prompt=False), dict(add_generation_prompt=True)]
    if with_tools:
        out.append(dict(add_generation_prompt=True, tools=data["tools"]))
        out.append(dict(add_generation_prompt=False, tools=data["tools"]))
    if ends_with_assistant:
        out.append(dict(continue_final_message=True))
    if name == "system_two_turns":
        out.append(dict(add_generation_prompt=True, documents=data["documents"]))
    if name in ("reasoning", "two_turns"):
        out.append(dict(add_generation_prompt=True, kwargs={"enable_thinking": False}))
        out.append(dict(add_generation_prompt=True, kwargs={"enable_thinking": True, "reasoning_effort": "low"}))
    if name == "single_user":
        out.append(dict(add_generation_prompt=True, kwargs={"date_string": "14 Mar 2026", "tools_in_user_message": False},
                        tools=data["tools"]))
    return out


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    folders, features = [], []
    rest = sys.argv[3:]
    while rest:
        if rest[0] == "--features":
            with open(rest[1], encoding="utf-8") as f:
                features = json.load(f)
            rest = rest[2:]
        else:
            folders.append(rest.pop(0))
    templates = []
    for folder in folders:
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".jinja"):
                with open(os.path.join(folder, fname), "rb") as f:
                    templates.append((fname, f.read().decode("utf-8")))
    cases = []
    for fname, source in templates:
        try:
            compiled = compile_template(source)
        except Exception as e:  # a template jinja2 cannot parse: one case records the error
            cases.append(dict(template=fname, conversation=None, error=str(e), error_type=type(e).__name__))
            continue
        for conv_name, messages in data["conversations"].items():
            for opt in cases_for(conv_name, messages, data):
                tools, documents = opt.get("tools"), opt.get("documents")
                kwargs = dict(SPECIAL_TOKENS)
                kwargs.update(opt.get("kwargs", {}))
                agp, cfm = opt.get("add_generation_prompt", False), opt.get("continue_final_message", False)
                case = dict(template=fname, conversation=conv_name,
                            messages=json.dumps(messages, ensure_ascii=False),
                            tools=json.dumps(tools, ensure_ascii=False),
                            documents=json.dumps(documents, ensure_ascii=False),
                            kwargs=json.dumps(kwargs, ensure_ascii=False),
                            add_generation_prompt=agp, continue_final_message=cfm)
                track = not cfm
                try:
                    text, spans = render(compiled, messages, tools, documents, agp, cfm, track, kwargs)
                    case["output"] = text
                    case["spans"] = [list(s) for s in spans]
                except Exception as e:
                    case["error"] = str(e)
                    case["error_type"] = type(e).__name__
                cases.append(case)
    feature_out = []
    for feat in features:
        entry = dict(name=feat["name"])
        try:
            compiled = compile_template(feat["template"])
            entry["output"] = compiled.render(**feat["vars"])
        except Exception as e:
            entry["error"] = str(e)
            entry["error_type"] = type(e).__name__
        feature_out.append(entry)
    out = dict(jinja2=jinja2.__version__, now=list(NOW.timetuple())[:6], templates=len(templates), cases=cases,
               features=feature_out)
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    os.replace(tmp, sys.argv[2])
    errors = sum(1 for c in cases if "error" in c)
    print(f"jinja2 {jinja2.__version__}: {len(templates)} templates, {len(cases)} renders ({errors} raise), "
          f"{len(feature_out)} feature cases")


if __name__ == "__main__":
    main()
