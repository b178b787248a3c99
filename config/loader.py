"""Reading YAML files into config models, with errors facilities staff can act on.

Every problem in a file is reported at once, each as one sentence naming the
file, the line, the key and what was expected::

    door.yaml line 14: hardware.lock.unlock_seconds is 120, but must be between 1 and 30 seconds
    door.yaml line 3: camera.widht is not a known setting (did you mean 'width'?)
    door.yaml line 9: key 'door.id' appears twice (first at line 4)

The steps, in order: parse the YAML keeping each key's line and catching
duplicate keys; refuse secrets written into the file; upgrade an old format
(:mod:`config.migrations`); validate with the pydantic model; run the model's
cross-field checks (``cross_check()``, e.g. one GPIO pin used twice); and,
for ``check-config``, make sure the secrets the file needs are available.

The YAML dialect is YAML 1.2-like on purpose: only ``true``/``false`` are
booleans (so ``wiring: NO`` stays the text ``NO``), ``08:30`` is text, not
the number 510 that YAML 1.1 would make of it, ``2026-12-25`` is text that a
date setting reads (so ``2026-02-30`` is reported by the setting, not crashed
on), and keys are always text (``1234:`` is the door id ``'1234'``).  Anchors
and aliases (``&name``/``*name``) are refused: nothing needs them, and nine
nested aliases expand to gigabytes.
"""

import difflib
import logging
import os
import re
import typing
from typing import NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from bytelocker.errors import ConfigError
from config import migrations, secrets
from config.base import NO_VALUE, Problem

logger = logging.getLogger(__name__)

# Sections whose URLs may hold a password because the device offers no other
# way to log in (an IP camera's rtsp://user:password@host/...).  Their values
# are masked in every message.
URL_PASSWORD_ALLOWED = {"camera"}


# -- YAML with line numbers ----------------------------------------------------


class LineDict(dict):
    """A mapping read from YAML that remembers the line of each key (1-based)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_lines = {}


class LineList(list):
    """A sequence read from YAML that remembers the line of each item (1-based)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.item_lines = []


class LineLoader(yaml.SafeLoader):
    """A SafeLoader that records key lines and collects duplicate keys.

    Duplicates are collected in ``self.duplicates`` as ``(mapping, key, line,
    first_line)`` rather than raised, so every one of them is reported.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates = []

    def compose_node(self, parent, index):
        event = self.peek_event()
        if event.anchor is not None:
            # Refused before anything is built: a few lines of aliases can expand to gigabytes.
            raise UnsupportedYaml(
                None, None,
                "anchors and aliases (&name, *name) are not supported in ByteLocker config files; "
                "write the value out in full, and put a value that starts with '&' or '*' in quotes",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError):
            # PyYAML's own constructors fail with bare exceptions and no line ('!!int abc').
            raise UnreadableValue(node) from None


class UnsupportedYaml(yaml.MarkedYAMLError):
    """Valid YAML that ByteLocker files do not use (anchors and aliases)."""


class UnreadableValue(yaml.YAMLError):
    """A value YAML cannot turn into its type, like ``!!int abc`` or ``0x_``.

    ``keys`` is the key path to it, filled in by the enclosing mappings and
    lists as the error passes through them.
    """

    def __init__(self, node):
        super().__init__(f"cannot read {node.tag} value at line {node.start_mark.line + 1}")
        self.node = node
        self.keys = []


def _construct_mapping(loader, node):
    data = LineDict()
    yield data
    explicit = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    merged = len(node.value) - explicit
    for index, (key_node, value_node) in enumerate(node.value):
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name, not a list or a section", key_node.start_mark)
        # Keys are names: '1:' or 'null:' is the text '1' or 'null' (a door id made of
        # digits stays text), so an unknown one is reported by name at its own line.
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in data.key_lines and index >= merged and data.key_lines[key][1]:
            loader.duplicates.append((data, key, line, data.key_lines[key][0]))
        else:
            data.key_lines[key] = (line, index >= merged)
        try:
            data[key] = loader.construct_object(value_node, deep=True)
        except UnreadableValue as exc:
            exc.keys.insert(0, key)
            raise
    data.key_lines = {key: line for key, (line, _) in data.key_lines.items()}


def _construct_sequence(loader, node):
    data = LineList()
    yield data
    for position, item in enumerate(node.value):
        try:
            data.append(loader.construct_object(item, deep=True))
        except UnreadableValue as exc:
            exc.keys.insert(0, position)
            raise
        data.item_lines.append(item.start_mark.line + 1)


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)

# YAML 1.1 reads yes/no/on/off as booleans and 08:30 as a base-60 number; both
# surprise people ('wiring: NO' would become False).  Keep YAML 1.2's rules.
# 2026-12-25 stays text too: a date setting reads it and can say what is wrong
# with 2026-02-30, where PyYAML would crash on it, and a name may look like a date.
LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                           "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))
LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+"
               r"|[-+]?[0-9][0-9_]*\."
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml_int(loader, node):
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text)


LineLoader.add_constructor("tag:yaml.org,2002:int", _yaml_int)


def _refuse_binary(loader, node):
    # bytes would reach a text setting as '' or "b'...'": never what staff meant.
    raise UnsupportedYaml(None, None, "binary values (!!binary) are not supported in ByteLocker config files; "
                          "write the value as plain text", node.start_mark)


LineLoader.add_constructor("tag:yaml.org,2002:binary", _refuse_binary)


def _plain(data):
    """``data`` with LineDict/LineList turned into dict/list, for pydantic."""
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_plain(value) for value in data]
    return data


def _line_index(data, prefix=(), index=None):
    """Map every key path in ``data`` to its line: ``{("lock", "pin"): 12, ...}``."""
    index = {} if index is None else index
    if isinstance(data, dict):
        lines = getattr(data, "key_lines", {})
        for key, value in data.items():
            if key in lines:
                index[prefix + (key,)] = lines[key]
            _line_index(value, prefix + (key,), index)
    elif isinstance(data, list):
        lines = getattr(data, "item_lines", [])
        for position, value in enumerate(data):
            if position < len(lines):
                index[prefix + (position,)] = lines[position]
            _line_index(value, prefix + (position,), index)
    return index


def _path_of(root, target, prefix=()):
    """The key path of the mapping ``target`` (by identity) inside ``root``."""
    if root is target:
        return prefix
    children = root.items() if isinstance(root, dict) else enumerate(root) if isinstance(root, list) else ()
    for key, value in children:
        if isinstance(value, (dict, list)):
            found = _path_of(value, target, prefix + (key,))
            if found is not None:
                return found
    return None


# -- plain-words phrasing ------------------------------------------------------

_UNITS = ("seconds", "milliseconds", "minutes", "hours", "days", "pixels", "bytes", "events",
          "frames", "frames/s", "percent", "degrees")

_SIMPLE = {
    "missing": "is required",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number, without a fraction",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be an ordinary number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text (put it in quotes)",
    "string_unicode": "must be text",
    "model_type": "must be a section of settings (indented 'key: value' lines below it)",
    "model_attributes_type": "must be a section of settings (indented 'key: value' lines below it)",
    "dict_type": "must be a section of settings (indented 'key: value' lines below it)",
    "list_type": "must be a list (lines starting with '- ')",
    "tuple_type": "must be a list (lines starting with '- ')",
    "set_type": "must be a list (lines starting with '- ')",
    "date_parsing": "must be a date written YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date written YYYY-MM-DD",
    "date_type": "must be a date written YYYY-MM-DD",
    "time_parsing": "must be a time of day written HH:MM",
    "datetime_parsing": "must be a date and time written YYYY-MM-DD HH:MM",
    "url_parsing": "must be a web address (URL)",
    "url_scheme": "must be a web address (URL) of a supported kind",
    "none_required": "must be left empty",
    "is_instance_of": "has the wrong kind of value",
}


def _number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show(value):
    """A value as staff wrote it: 120, 'hgo', true, empty, a section, a list."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, dict):
        return "a section"
    if isinstance(value, (list, tuple)):
        return "a list"
    # A camera URL may carry its password (config.camera allows it); never echo one.
    text = re.sub(r"(://[^/@:\s]*):[^/@\s]*@", r"\1:***@", str(value))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"'{text}'"


def _unit(field):
    """The unit at the end of a field description ('..., seconds.'), or ''."""
    description = (getattr(field, "description", None) or "").rstrip(". ")
    for part in description.split(",")[1:]:
        word = re.match(r"\s*([\w/]+)", part)
        if word and word.group(1) in _UNITS:
            return f" {word.group(1)}"
    many = re.search(r"this many ([\w/]+)", description)
    return f" {many.group(1)}" if many and many.group(1) in _UNITS else ""


def _bounds(field):
    found = {}
    for item in getattr(field, "metadata", ()) or ():
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _range_phrase(field, fallback):
    """'must be between 1 and 30 seconds' from the field's bounds."""
    bounds, unit = _bounds(field), _unit(field)
    low = ("ge", bounds["ge"]) if "ge" in bounds else ("gt", bounds["gt"]) if "gt" in bounds else None
    high = ("le", bounds["le"]) if "le" in bounds else ("lt", bounds["lt"]) if "lt" in bounds else None
    if low and high and low[0] == "ge" and high[0] == "le":
        return f"must be between {_number(low[1])} and {_number(high[1])}{unit}"
    parts = []
    if low:
        parts.append(f"{'at least' if low[0] == 'ge' else 'more than'} {_number(low[1])}")
    if high:
        parts.append(f"{'at most' if high[0] == 'le' else 'less than'} {_number(high[1])}")
    return f"must be {' and '.join(parts)}{unit}" if parts else fallback


def _expectation(error, field, owner):
    """Phrase one pydantic error as the part after "is VALUE, but"."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind.startswith("date_") and re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(error.get("input", ""))):
        # Written right, but there is no such day: '2026-02-30'.
        return "is not a date on the calendar (check the month and the day)"
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "")
        word = {"greater_than": "more than", "greater_than_equal": "at least",
                "less_than": "less than", "less_than_equal": "at most"}[kind]
        return _range_phrase(field, f"must be {word} {_number(bound)}")
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", ""))) or [str(ctx.get("expected"))]
        return "must be one of: " + ", ".join(choices)
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {ctx.get('min_length')} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if kind == "string_pattern_mismatch":
        description = (getattr(field, "description", "") or "").rstrip(".")
        description = description[:1].lower() + description[1:]
        return "has characters that are not allowed" + (f" ({description})" if description else "")
    if kind in ("value_error", "assertion_error"):
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        return message if message.startswith(("must", "is ", "has ")) else f"is not accepted: {message}"
    message = error["msg"]
    return message[:1].lower() + message[1:]


# -- walking the model's types to clean pydantic locations ---------------------


def _members(annotation):
    """The concrete types in an annotation: Optional[X] -> [X, NoneType], Annotated stripped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        return [t for arg in typing.get_args(annotation) for t in _members(arg)]
    if type(annotation).__name__ == "UnionType":
        return [t for arg in typing.get_args(annotation) for t in _members(arg)]
    return [annotation]


def _field_named(model, part):
    for name, field in model.model_fields.items():
        if part == name or (field.alias and part == field.alias):
            return field
    return None


def _setting_names(model):
    return [field.alias or name for name, field in model.model_fields.items()]


def _resolve(model, loc):
    """Clean a pydantic ``loc`` to the keys staff wrote.

    Returns ``(keys, field, owner)``: the key path without union tags such as
    ``'int'`` or ``'function-after[...]'``, the FieldInfo of the last key (or
    None) and the model class that holds it (or the model of the last section).
    """
    candidates, keys, field, owner = [model], [], None, model
    for part in loc:
        following, matched_field, matched_owner = [], None, None
        for annotation in candidates:
            for member in _members(annotation):
                origin = typing.get_origin(member)
                if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
                    found = _field_named(member, part)
                    if found is not None:
                        following.append(found.annotation)
                        matched_field, matched_owner = found, member
                elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
                    following.extend(typing.get_args(member)[:1])
                elif origin is dict and isinstance(part, str):
                    following.extend(typing.get_args(member)[1:2])
        if following:
            keys.append(part)
            candidates, field = following, matched_field
            if matched_owner is not None:
                owner = matched_owner
            else:
                field = None
    # The model of the section the last key points into, for 'did you mean'.
    for annotation in candidates:
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                return keys, field, member
    return keys, field, owner


def _dotted(keys):
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _translate(errors, model):
    """Turn pydantic errors into :class:`Problem` s, one per key path."""
    grouped = {}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            keys, _, _ = _resolve(model, loc[:-1])
            keys = tuple(keys) + (loc[-1],)
            _, _, section = _resolve(model, keys[:-1])
            names = _setting_names(section)
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            what = "section" if len(keys) == 1 else "setting"
            hint = (f" (did you mean '{close[0]}'?)" if close
                    else f" (known {what}s here: {', '.join(names)})" if names and len(names) <= 12 else "")
            grouped.setdefault(keys, (NO_VALUE, []))[1].append(f"is not a known {what}{hint}")
            continue
        keys, field, owner = _resolve(model, loc)
        keys = tuple(keys)
        value = NO_VALUE if error["type"] == "missing" else error.get("input")
        phrase = _expectation(error, field, owner)
        if isinstance(value, dict) and error["type"] in ("value_error", "assertion_error"):
            # A check across a section's settings: the message names them itself.
            value = NO_VALUE
            phrase = "has a problem: " + phrase.removeprefix("is not accepted: ")
        entry = grouped.setdefault(keys, (value, []))
        if phrase not in entry[1]:
            entry[1].append(phrase)
    problems = []
    for keys, (value, phrases) in grouped.items():
        if len(phrases) > 1:
            # A union (e.g. a camera index or a path): say what any member accepts.
            phrases = ["must be " + " or ".join(p[len("must be "):] if p.startswith("must be ") else p
                                                for p in phrases)]
        problems.append(Problem(keys, phrases[0], value))
    return problems


# -- the pipeline --------------------------------------------------------------


class LoadResult(NamedTuple):
    """What reading one file found: the config (or None) and every problem, phrased."""

    path: str
    config: object
    problems: list
    notes: list
    version_written: object


def _yaml_problem(path, exc):
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path} line {mark.line + 1}" if mark is not None else path
    problem = str(getattr(exc, "problem", "") or exc)
    if isinstance(exc, UnsupportedYaml):
        return f"{where}: {problem}"
    if "\\t" in problem or "\t" in problem:
        text = "a tab is used for indenting; indent with spaces only"
    elif "mapping values are not allowed" in problem:
        text = ("a ':' is in an unexpected place; check the indentation, and put a value "
                "that contains ': ' in quotes")
    elif "could not find expected ':'" in problem:
        text = "a line is missing its ':' (settings are written 'key: value')"
    elif "expected <block end>" in problem or "did not find expected key" in problem:
        text = "the indentation does not line up with the lines above"
    elif "found undefined alias" in problem or "found unknown escape" in problem:
        text = f"{problem}; put values that start with '*', '&' or contain '\\' in quotes"
    else:
        text = problem
    return f"{where}: this is not valid YAML: {text}"


_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false",
               "timestamp": "a date or time", "binary": "base64 data", "null": "empty"}


def _unreadable_value_problem(path, exc):
    """``door.yaml line 4: camera.width is 'abc', but it is marked !!int and ...``."""
    node = exc.node
    line = node.start_mark.line + 1
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    what = _TYPE_WORDS.get(tag[2:], f"a {tag} value") if tag.startswith("!!") else f"a {tag} value"
    mark = node.start_mark
    written = mark.buffer is not None and mark.buffer[mark.pointer:mark.pointer + 1] == "!"
    if written:
        expectation = (f"it is marked {tag} and that is not {what}; remove the '{tag}' "
                       "(ByteLocker files need no '!!' marks) or fix the value")
    else:
        expectation = f"it cannot be read as {what}; fix the value, or put it in quotes if it is text"
    value = _show(node.value) if isinstance(node, yaml.ScalarNode) else "a section or list"
    subject = _dotted(exc.keys) if exc.keys else "the value"
    return f"{path} line {line}: {subject} is {value}, but {expectation}"


def _not_utf8_problem(path):
    """Where the first byte that is not UTF-8 is, as a line and column."""
    text = f"{path}: the file is not UTF-8 text; save it as UTF-8."
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        # Characters, not bytes: everything before the bad byte decodes.
        column = len(data[data.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8")) + 1
        text = (f"{path} line {line}: the file is not UTF-8 text (the byte 0x{data[exc.start]:02x} at "
                f"column {column} is not UTF-8); save it as UTF-8.")
    except OSError:
        pass
    return text


def _fill_empty_sections(raw, model):
    """A section with every line commented out reads as empty, not as an error."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        members = _members(field.annotation)
        if key in raw and raw[key] is None and type(None) not in members:
            sections = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if sections:
                raw[key] = LineDict()
        if isinstance(raw.get(key), dict):
            for member in members:
                if isinstance(member, type) and issubclass(member, BaseModel):
                    _fill_empty_sections(raw[key], member)
                    break


def _secret_keys(raw, prefix=()):
    """Problems for every key or URL in ``raw`` that holds a secret."""
    found = []
    for key, value in raw.items():
        keys = prefix + (key,)
        dotted = _dotted(keys)
        if secrets.looks_like_secret_key(key):
            secret = secrets.secret_for_key(dotted)
            where = secret.hint() if secret else (
                "an environment variable or a systemd credential (LoadCredential=)")
            what = f"{secret.what} " if secret else "a secret "
            found.append(Problem(keys, f"holds {what}and must not be written in a config file; "
                                       f"remove it and give it in {where}"))
        elif secrets.url_has_password(value) and keys[0] not in URL_PASSWORD_ALLOWED:
            secret = secrets.secret_for_key(dotted)
            where = secret.hint() if secret else "an environment variable or a systemd credential"
            found.append(Problem(keys, f"has a password in it, which must not be written in a config "
                                       f"file; remove it from the address and give it in {where}"))
        elif isinstance(value, dict):
            found.extend(_secret_keys(value, keys))
        elif isinstance(value, list):
            for position, item in enumerate(value):
                if isinstance(item, dict):
                    found.extend(_secret_keys(item, keys + (position,)))
    return found


def _phrase(path, lines, problem):
    keys = tuple(problem.loc)
    line = None
    for length in range(len(keys), 0, -1):
        line = lines.get(keys[:length])
        if line is not None:
            break
    where = f"{path} line {line}" if line is not None else path
    shown = "" if problem.value is NO_VALUE else _show(problem.value)
    if shown and keys not in lines:
        shown += " (the default)"
    if not keys:
        return line, f"{where}: {problem.expectation}"
    if problem.value is NO_VALUE:
        return line, f"{where}: {_dotted(keys)} {problem.expectation}"
    return line, f"{where}: {_dotted(keys)} is {shown}, but {problem.expectation}"


def _kind_name(model):
    return {"DoorConfig": "door", "CentralConfig": "central"}.get(model.__name__, "door")


def inspect_file(path, model, *, check_secrets=False):
    """Read ``path`` against ``model`` and return a :class:`LoadResult`; never raises ConfigError.

    :param check_secrets: also report secrets the file needs that are not
        available in the environment or ``$CREDENTIALS_DIRECTORY`` (what
        ``check-config`` and the service's ``ExecStartPre=`` want).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return LoadResult(path, None, [f"{path}: there is no such file."], [], None)
    except UnicodeDecodeError:
        return LoadResult(path, None, [_not_utf8_problem(path)], [], None)
    except OSError as exc:
        return LoadResult(path, None, [f"{path}: cannot read the file: {exc.strerror or exc}."], [], None)

    loader = LineLoader(text)
    try:
        raw = loader.get_single_data()
    except UnreadableValue as exc:
        return LoadResult(path, None, [_unreadable_value_problem(path, exc)], [], None)
    except yaml.YAMLError as exc:
        return LoadResult(path, None, [_yaml_problem(path, exc)], [], None)
    finally:
        loader.dispose()

    if raw is None:
        return LoadResult(path, None, [
            f"{path}: the file is empty; start from 'bytelocker config example {_kind_name(model)}'."
        ], [], None)
    if not isinstance(raw, dict):
        return LoadResult(path, None, [
            f"{path} line 1: the file must be made of sections such as 'door:' and 'camera:', "
            f"each followed by indented settings, but it is {_show(raw)}."
        ], [], None)

    problems = []
    for mapping, key, line, first in loader.duplicates:
        keys = (_path_of(raw, mapping) or ()) + (key,)
        problems.append((line, f"{path} line {line}: key '{_dotted(keys)}' appears twice "
                                f"(first at line {first}); keep only one"))

    secret_problems = _secret_keys(raw)
    secret_paths = {tuple(p.loc) for p in secret_problems}
    lines = _line_index(raw)
    problems.extend(_phrase(path, lines, p) for p in secret_problems)

    def without_secrets(mapping, prefix=()):
        # Drop secret keys before validation so their values never reach an error message.
        for key in list(mapping):
            if prefix + (key,) in secret_paths:
                del mapping[key]
            elif isinstance(mapping[key], dict):
                without_secrets(mapping[key], prefix + (key,))
            elif isinstance(mapping[key], list):
                for position, item in enumerate(mapping[key]):
                    if isinstance(item, dict):
                        without_secrets(item, prefix + (key, position))

    without_secrets(raw)

    try:
        version_written, notes = migrations.migrate(raw, model)
    except migrations.VersionProblem as exc:
        problems.append(_phrase(path, lines, Problem(exc.loc, exc.expectation, exc.value)))
        return LoadResult(path, None, _in_line_order(problems), [], None)
    lines = _line_index(raw)
    _fill_empty_sections(raw, model)

    config = None
    try:
        config = model.model_validate(_plain(raw))
    except ValidationError as exc:
        problems.extend(_phrase(path, lines, p) for p in _translate(exc.errors(), model))

    if config is not None:
        cross_check = getattr(config, "cross_check", None)
        if cross_check is not None:
            problems.extend(_phrase(path, lines, p) for p in cross_check())
        if check_secrets:
            for keys, secret, reason in secrets.missing_secrets(config):
                where = f"{path} line {lines[keys]}" if keys in lines else path
                problems.append((lines.get(keys), f"{where}: {reason}, so {secret.what} is needed, "
                                                  f"but it is not available; give it in {secret.hint()}"))
    if problems:
        config = None
    return LoadResult(path, config, _in_line_order(problems), notes, version_written)


def _in_line_order(problems):
    """The texts of ``(line, text)`` problems, sorted by line; file-wide ones first."""
    ordered = sorted(enumerate(problems), key=lambda item: (item[1][0] or 0, item[0]))
    return [text for _, (_, text) in ordered]


def load(path, model, *, check_secrets=False):
    """Validate the YAML file at ``path`` against ``model``; return the model instance.

    Raises :class:`~bytelocker.errors.ConfigError` whose ``problems`` lists
    every problem found, each a sentence naming the file, line and key.
    """
    result = inspect_file(path, model, check_secrets=check_secrets)
    if result.problems:
        count = len(result.problems)
        heading = f"{path} has {count} problem{'s' if count > 1 else ''}:"
        raise ConfigError("\n".join([heading] + ["  " + p for p in result.problems]), result.problems)
    for note in result.notes:
        logger.info("config=%s migrated from version %s: %s", path, result.version_written, note)
    return result.config


def load_door_config(path=None):
    """Return the :class:`~config.door.DoorConfig` in ``path``, or the built-in defaults if None."""
    from config.door import DoorConfig

    return DoorConfig() if path is None else load(path, DoorConfig)


def load_central_config(path=None):
    """Return the :class:`~config.central.CentralConfig` in ``path``, or the built-in defaults if None."""
    from config.central import CentralConfig

    return CentralConfig() if path is None else load(path, CentralConfig)


def model_for(kind):
    """The config class for ``kind``: ``"door"`` or ``"central"``."""
    if kind == "door":
        from config.door import DoorConfig

        return DoorConfig
    if kind == "central":
        from config.central import CentralConfig

        return CentralConfig
    raise ConfigError(f"Unknown kind of config '{kind}': use door or central.")


def detect_kind(path):
    """Guess whether ``path`` is a door or central config from its sections.

    A ``door:`` section means door; ``database:`` or ``storage:`` means
    central.  Returns None if the file cannot tell (unreadable, empty, both).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        return None
    top = set(re.findall(r"^([A-Za-z_][\w-]*)\s*:", text, flags=re.MULTILINE))
    door = bool(top & {"door", "camera", "hardware", "detection", "recognition", "decision", "policy"})
    central = bool(top & {"database", "storage"})
    if door != central:
        return "door" if door else "central"
    return None
