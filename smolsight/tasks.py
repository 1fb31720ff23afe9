"""Per-task prompts, in two styles, for cases that do not carry their own prompt.

`raw` is exactly what the field report sent (and faithful English translations), so its
results can be reproduced. `short` asks for the short answers scorers read reliably: the
report's long answers padded with repetition are part of what is being measured, but a number
or a sentence is what a camera user acts on.

Some prompts name a subject (what to count or measure, what to ask about); `{subject}` is
filled from the `subject` argument, else from `DEFAULT_SUBJECTS`, which follow the report.
"""

from __future__ import annotations

from .errors import SmolsightError
from .text import has_cjk, normalise

TASKS = ("describe", "accident", "trend", "count", "read", "measure", "qa")
LANGS = ("zh", "en")
STYLES = ("short", "raw")

DEFAULT_SUBJECTS: dict[str, dict[str, str]] = {
    "count": {"zh": "虾苗", "en": "shrimp fry"},
    "measure": {"zh": "铅笔", "en": "pencil"},
    "qa": {"zh": "iNeuOS", "en": "iNeuOS"},
}

TASK_PROMPTS: dict[str, dict[str, dict[str, str]]] = {
    "raw": {
        "describe": {"zh": "请描述这张图像？", "en": "Please describe this image?"},
        "accident": {"zh": "请描述这个事故现场？", "en": "Please describe this accident scene?"},
        "trend": {
            "zh": "这是温度场仿真，请描述温度变化趋势？",
            "en": "This is a temperature field simulation, please describe the temperature trend?",
        },
        "count": {
            "zh": "这是{subject}养殖图像，请分析{subject}数量？",
            "en": "This is a {subject} farming image, please analyse the number of {subject}?",
        },
        "read": {"zh": "图像上的文字是什么？", "en": "What is the text in the image?"},
        "measure": {"zh": "图像上的{subject}有多长？", "en": "How long is the {subject} in the image?"},
        "qa": {
            "zh": "结合图像上的内容，请问简单{subject}是什么？",
            "en": "Based on the content of the image, briefly, what is {subject}?",
        },
    },
    "short": {
        "describe": {
            "zh": "用一两句话描述这张图像，说出主要物体。",
            "en": "Describe this image in one or two sentences, naming the main objects.",
        },
        "accident": {
            "zh": "用一两句话描述这个事故现场：发生了什么？",
            "en": "Describe this accident scene in one or two sentences: what is happening?",
        },
        "trend": {
            "zh": "这是温度场仿真图。温度朝哪个方向升高？用一句话回答。",
            "en": "This is a temperature field simulation. In which direction does the temperature rise? Answer in one sentence.",
        },
        "count": {
            "zh": "图像中有多少{subject}？只回答一个数字。",
            "en": "How many {subject} are in the image? Answer with a number only.",
        },
        "read": {
            "zh": "图像上的文字是什么？只输出这些文字。",
            "en": "What is the text in the image? Output only the text.",
        },
        "measure": {
            "zh": "参照图中的尺子，{subject}有多长？只回答一个以厘米为单位的数字。",
            "en": "Using the ruler in the image, how long is the {subject}? Answer with a number of centimetres only.",
        },
        "qa": {
            "zh": "根据图像上的文字回答：{subject}是什么？用一句话回答。",
            "en": "Answer from the text in the image: what is {subject}? Answer in one sentence.",
        },
    },
}


def _check(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SmolsightError(f"unknown prompt {kind} {value!r}; choose one of {', '.join(allowed)}")


def task_prompt(task: str, lang: str = "zh", style: str = "short", subject: str | None = None) -> str:
    """The prompt for `task` in `lang` and `style`, with `{subject}` filled in."""
    _check("task", task, TASKS)
    _check("language", lang, LANGS)
    _check("style", style, STYLES)
    template = TASK_PROMPTS[style][task][lang]
    if subject is None:
        subject = DEFAULT_SUBJECTS.get(task, {}).get(lang, "")
    return template.format(subject=subject)


# What `short` adds to a case's own prompt: the answer form each task's scorer reads best.
ANSWER_INSTRUCTIONS: dict[str, dict[str, str]] = {
    "describe": {"zh": "用一两句话回答，说出主要物体。", "en": "Answer in one or two sentences, naming the main objects."},
    "accident": {"zh": "用一两句话回答：发生了什么？", "en": "Answer in one or two sentences: what is happening?"},
    "trend": {"zh": "用一句话回答。", "en": "Answer in one sentence."},
    "count": {"zh": "只回答一个数字。", "en": "Answer with a number only."},
    "read": {"zh": "只输出这些文字。", "en": "Output only the text."},
    "measure": {"zh": "只回答一个以厘米为单位的数字。", "en": "Answer with a number of centimetres only."},
    "qa": {"zh": "用一句话回答。", "en": "Answer in one sentence."},
}


def guess_lang(text: str) -> str:
    """zh when the text has any Chinese character, else en."""
    return "zh" if has_cjk(text) else "en"


def styled_prompt(task: str, prompt: str | None = None, lang: str | None = None, style: str = "short") -> str:
    """`prompt` made to ask for `task`'s answer form in `style`, or the task's own prompt when
    there is none. `lang` defaults to the prompt's language (zh without a prompt)."""
    lang = lang or (guess_lang(prompt) if prompt else "zh")
    if not prompt:
        return task_prompt(task, lang, style)
    task_prompt(task, lang, style)  # checks task, language and style names
    instruction = ANSWER_INSTRUCTIONS[task][lang]
    if style == "raw" or normalise(instruction) in normalise(prompt):
        return prompt
    return f"{prompt.rstrip()}{'' if lang == 'zh' else ' '}{instruction}"
