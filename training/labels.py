"""Per-frame labels (beam energy, field strength, particle type, ...) for conditional models.

Where they come from (`data.labels`, one source or a list):

- a CSV with a header: a `file` column matched to the frames' file names relative to `data.path`
  (folders and .zip files), or, for a .npy/.npz/HDF5 stack, no `file` column and one row per
  frame in order; every other column is a label;
- a .npy or .npz[:key] array aligned with the stack: [N] is one label named after the key (or
  the file's stem), [N, K] gives K labels named <name>_0 ... <name>_{K-1};
- an HDF5 dataset `frames.h5:/entry/energy`, named after its last path component.

`builtin:particles-cond` carries its own labels (energy, field, type). `data.label_columns` picks
columns (all by default); each is continuous (every value a number with a fraction somewhere, or
`name:continuous`) or discrete (integers or strings, or `name:discrete`). A continuous label is
mapped by one set-wide affine map from [low, high] (fitted: its min and max; or
`data.label_ranges`) to [-1, 1]; a discrete one is one-hot over its sorted classes. The fitted
columns, ranges and classes are written back into the config, so `config.yaml` and every
checkpoint rebuild the same encoding (as `data.range` does for the frames).
"""

import csv
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from training.data import BUILTIN_PREFIX, DataError, parse_builtin, read_array, split_array_path

KINDS = ("continuous", "discrete")


@dataclass
class LabelColumn:
    name: str
    kind: str                          # 'continuous' or 'discrete'
    low: float = 0.0                   # continuous: the values mapped to -1 ...
    high: float = 1.0                  # ... and +1
    classes: tuple[str, ...] = ()      # discrete: class names in one-hot order

    @property
    def width(self) -> int:
        return 1 if self.kind == "continuous" else len(self.classes)


class LabelEncoding:
    """Label values (numbers and class names) <-> the vector c the networks take, [N, c_dim] float32."""

    def __init__(self, columns: list[LabelColumn]):
        self.columns = columns
        self.c_dim = sum(column.width for column in columns)

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def encode(self, values: dict[str, list]) -> torch.Tensor:
        """{name: N values} -> [N, c_dim]. A value outside a continuous range is kept (extrapolation);
        an unknown class is a ValueError naming it and the known ones."""
        parts = []
        for column in self.columns:
            column_values = values[column.name]
            if column.kind == "continuous":
                x = np.asarray(column_values, np.float64)
                parts.append(((x - column.low) / (column.high - column.low) * 2 - 1)[:, None])
            else:
                index = {name: i for i, name in enumerate(column.classes)}
                unknown = sorted({str(v) for v in column_values} - set(index))
                if unknown:
                    raise ValueError(f"{column.name}: unknown class {unknown[0]!r}; the classes are "
                                     f"{', '.join(column.classes)}")
                parts.append(np.eye(len(column.classes))[[index[str(v)] for v in column_values]])
        n = len(next(iter(values.values()))) if values else 0
        return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((n, 0),
                                                                                                       np.float32))

    def decode(self, c: torch.Tensor) -> dict[str, list]:
        """[N, c_dim] -> {name: N values}: continuous mapped back, discrete by the largest entry."""
        c, values, at = c.detach().cpu().double().numpy(), {}, 0
        for column in self.columns:
            block = c[:, at:at + column.width]
            if column.kind == "continuous":
                values[column.name] = list((block[:, 0] + 1) / 2 * (column.high - column.low) + column.low)
            else:
                values[column.name] = [column.classes[i] for i in block.argmax(1)]
            at += column.width
        return values

    def to_config(self) -> dict:
        """What `data.label_columns`, `data.label_ranges` and `data.label_classes` record."""
        return {"label_columns": [f"{c.name}:{c.kind}" for c in self.columns],
                "label_ranges": [[c.low, c.high] if c.kind == "continuous" else [] for c in self.columns],
                "label_classes": [list(c.classes) for c in self.columns]}

    @classmethod
    def from_config(cls, data: dict) -> "LabelEncoding":
        """The encoding a fitted config records (an unconditional config gives c_dim 0)."""
        columns = []
        for spec, bounds, classes in zip(data.get("label_columns") or [], data.get("label_ranges") or [],
                                         data.get("label_classes") or []):
            name, kind = split_column(spec)
            if kind == "continuous":
                columns.append(LabelColumn(name, kind, float(bounds[0]), float(bounds[1])))
            else:
                columns.append(LabelColumn(name, "discrete", classes=tuple(classes)))
        return cls(columns)

    def in_range_warnings(self, values: dict[str, list]) -> list[str]:
        """One line per continuous label with values outside the training range."""
        lines = []
        for column in self.columns:
            if column.kind != "continuous" or column.name not in values:
                continue
            x = np.asarray(values[column.name], np.float64)
            if (x < column.low).any() or (x > column.high).any():
                lines.append(f"{column.name}: values outside the training range [{column.low:g}, {column.high:g}] "
                             f"({x.min():g} to {x.max():g}); the model extrapolates there")
        return lines


def split_column(spec: str) -> tuple[str, str | None]:
    """'energy:continuous' -> ('energy', 'continuous'); 'energy' -> ('energy', None)."""
    name, _, kind = spec.partition(":")
    if kind and kind not in KINDS:
        raise DataError(f"data.label_columns: {spec!r}: the kind after ':' must be continuous or discrete")
    return name, kind or None


def has_labels(data_config) -> bool:
    return bool(data_config.labels) or builtin_has_labels(data_config.path)


def builtin_has_labels(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX) and parse_builtin(path)[0] == "particles-cond"


# ---------------------------------------------------------------------------
# Reading: a table {column: one value per frame}, values as read (numbers or strings)

def _number(text: str):
    """A CSV cell as int, float or the string itself; '' and NaN are missing (None)."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text or None
    return None if math.isnan(value) else value


def read_csv_labels(path: str, frame_names: list[str] | None, count: int | None) -> dict[str, list]:
    """A label CSV -> {column: values in frame order}. With `frame_names` (frames from files) rows are
    matched by the `file` column; for a stack (names None) the rows are the frames in order, `count`
    of them (None: as many as the CSV has, e.g. settings to generate at)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"data.labels: cannot read {path} ({e.strerror}); give a CSV with a header row")
    if not rows or not rows[0]:
        raise DataError(f"data.labels: {path} is empty; it needs a header row (file,energy,...) and one row per frame")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"data.labels: {path} row {number} has {len(row)} cells, the header {len(header)}")
    label_names = [h for h in header if h != "file"]
    if frame_names is None:
        count = len(body) if count is None else count
        if len(body) != count:
            raise DataError(f"data.labels: {path} has {len(body)} rows for a stack of {count} frames; give one row "
                            f"per frame, in order")
        order = list(range(count))
    else:
        if "file" not in header:
            raise DataError(f"data.labels: {path} has no 'file' column; its rows are matched to the images by file "
                            f"name (relative to data.path)")
        repeated = next((name for name in frame_names if frame_names.count(name) > 1), None)
        if repeated:
            raise DataError(f"data.labels: {repeated} holds several frames (a page stack), which one CSV row cannot "
                            f"label; give the labels as an array (.npy) in frame order")
        column = header.index("file")
        row_of = {}
        for number, row in enumerate(body, start=2):
            name = row[column].strip().replace("\\", "/")
            if name in row_of:
                raise DataError(f"data.labels: {path} row {number}: {name} is labelled twice (also row "
                                f"{row_of[name] + 2})")
            row_of[name] = number - 2
        for name in frame_names:
            if name not in row_of:
                raise DataError(f"data.labels: the image {name} has no row in {path}; add one or remove the image")
        known = set(frame_names)
        for name, index in row_of.items():
            if name not in known:
                raise DataError(f"data.labels: {path} row {index + 2} labels {name}, which is not among the images "
                                f"of data.path; remove the row or add the image")
        order = [row_of[name] for name in frame_names]
    table = {}
    for name in label_names:
        column = header.index(name)
        values = []
        for row_index in order:
            value = _number(body[row_index][column])
            if value is None:
                which = f"({frame_names[len(values)]})" if frame_names else ""
                raise DataError(f"data.labels: {path} row {row_index + 2} {which}: {name} is empty or NaN; every "
                                f"frame needs every label")
            values.append(value)
        table[name] = values
    return table


def read_array_labels(path: str, count: int) -> dict[str, list]:
    """A .npy/.npz[:key]/.h5:/dataset label array aligned with the stack -> {column: values}."""
    file, key = split_array_path(path)
    try:
        array = read_array(path)
    except DataError as e:
        raise DataError(str(e).replace("data.path", "data.labels", 1))
    base = (key.rstrip("/").rsplit("/", 1)[-1] if key else os.path.splitext(os.path.basename(file))[0]) or "label"
    if array.ndim not in (1, 2) or len(array) != count:
        raise DataError(f"data.labels: {path} has shape {list(array.shape)} for {count} frames; expected [{count}] or "
                        f"[{count}, K]")
    if array.dtype.kind == "f" and np.isnan(array).any():
        row = int(np.argwhere(np.isnan(array))[0][0])
        raise DataError(f"data.labels: {path} row {row}: NaN; every frame needs every label")
    columns = {base: array} if array.ndim == 1 else {f"{base}_{k}": array[:, k] for k in range(array.shape[1])}
    table = {}
    for name, values in columns.items():
        if values.dtype.kind in "SU" or (values.dtype.kind == "O" and all(isinstance(v, (str, bytes)) for v in values)):
            # HDF5 variable-length strings arrive as objects (bytes)
            table[name] = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        elif values.dtype.kind in "iub":
            table[name] = [int(v) for v in values]
        elif values.dtype.kind == "f":
            table[name] = [float(v) for v in values]
        else:
            raise DataError(f"data.labels: {path} holds {values.dtype} values; expected numbers or strings")
    return table


def read_labels(data_config, frame_names: list[str] | None, count: int) -> dict[str, list]:
    """Every label column the data config's sources hold, one value per frame."""
    if builtin_has_labels(data_config.path):
        from training import particles
        options = parse_builtin(data_config.path)[1]
        rows = [particles.conditional_labels(options["seed"], i) for i in range(count)]
        return {name: [row[name] for row in rows] for name in rows[0]}
    sources = [data_config.labels] if isinstance(data_config.labels, str) else list(data_config.labels)
    table = {}
    for source in sources:
        part = (read_csv_labels(source, frame_names, count) if source.lower().endswith(".csv")
                else read_array_labels(source, count))
        for name in part:
            if name in table:
                raise DataError(f"data.labels: the column {name} comes from two sources; rename one")
        table |= part
    return table


# ---------------------------------------------------------------------------
# Fitting the encoding

def fit_encoding(table: dict[str, list], data_config, source: str) -> LabelEncoding:
    """The encoding of the chosen columns (data.label_columns, all by default), kinds inferred or given,
    ranges fitted unless data.label_ranges gives them."""
    specs = list(data_config.label_columns) or list(table)
    given_ranges = list(data_config.label_ranges or [])
    columns = []
    for i, spec in enumerate(specs):
        name, kind = split_column(spec)
        if name not in table:
            raise DataError(f"data.label_columns: {name} is not a label of {source}; its labels: {', '.join(table)}")
        values = table[name]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if kind is None:
            kind = "continuous" if numeric and any(isinstance(v, float) for v in values) else "discrete"
        if kind == "continuous":
            if not numeric:
                text = next(v for v in values if isinstance(v, str))
                raise DataError(f"data.label_columns: {name} is continuous but holds {text!r}; use {name}:discrete")
            bounds = given_ranges[i] if i < len(given_ranges) and given_ranges[i] else None
            low, high = (float(bounds[0]), float(bounds[1])) if bounds else (float(min(values)), float(max(values)))
            if not high > low:
                raise DataError(f"data.label_columns: every frame has {name} = {low:g}; a label that never changes "
                                f"cannot condition anything: leave it out")
            columns.append(LabelColumn(name, "continuous", low, high))
        else:
            counts = {}
            for v in values:
                counts[str(v)] = counts.get(str(v), 0) + 1
            once = [c for c, n in counts.items() if n == 1]
            if once:
                row = [str(v) for v in values].index(once[0])
                raise DataError(f"data.labels: {source}: {name} = {once[0]!r} (frame {row}) is the only frame of its "
                                f"class; a class needs at least two frames (merge it or drop the frame)")
            classes = sorted(counts, key=lambda c: (not c.lstrip("-").isdigit(), int(c) if c.lstrip("-").isdigit()
                                                    else 0, c))
            columns.append(LabelColumn(name, "discrete", classes=tuple(classes)))
    return LabelEncoding(columns)


def load_labels(data_config, frame_names: list[str] | None, count: int) -> tuple[LabelEncoding, torch.Tensor]:
    """(encoding, encoded labels [count, c_dim]) for a conditional data config; the fitted encoding is
    written back into it (data.label_columns, label_ranges, label_classes)."""
    table = read_labels(data_config, frame_names, count)
    source = data_config.path if builtin_has_labels(data_config.path) else ", ".join(
        [data_config.labels] if isinstance(data_config.labels, str) else data_config.labels)
    encoding = fit_encoding(table, data_config, source)
    for key, value in encoding.to_config().items():
        setattr(data_config, key, value)
    return encoding, encoding.encode({name: table[name] for name in encoding.names})


def excluded_frames(encoding: LabelEncoding, encoded: torch.Tensor, bands: list[str]) -> torch.Tensor:
    """Which frames have a continuous label inside one of `bands` ('energy:2.5:3.5', data units): a bool
    mask [N]. A band that is not name:low:high on a continuous label is a DataError."""
    excluded = torch.zeros(len(encoded), dtype=torch.bool)
    if not bands:
        return excluded
    values = encoding.decode(encoded)
    for band in bands:
        name, *bounds = band.split(":")
        column = next((c for c in encoding.columns if c.name == name), None)
        try:
            low, high = (float(b) for b in bounds)
        except ValueError:
            low = high = None
        if column is None or column.kind != "continuous" or low is None or not low < high:
            raise DataError(f"data.label_exclude: {band!r}: expected name:low:high with low < high on a continuous "
                            f"label ({', '.join(c.name for c in encoding.columns if c.kind == 'continuous')})")
        # A little slack for the round trip through the encoding, so a frame at a bound counts as inside.
        slack = 1e-9 * (column.high - column.low)
        x = torch.tensor(values[name], dtype=torch.float64)
        excluded |= (x >= low - slack) & (x <= high + slack)
    return excluded


def labels_for_indices(table: torch.Tensor, indices: torch.Tensor, seed: int) -> torch.Tensor:
    """Encoded labels drawn from a label table (the training set's: its label distribution), one row per
    sample index: sample i's row depends only on (seed, i), as its latent does."""
    from training.seeding import generator
    rows = [int(torch.randint(len(table), (), generator=generator(seed, "sample_label", int(i)))) for i in indices.cpu()]
    return table[torch.tensor(rows, dtype=torch.long, device=table.device)]


def parse_label_arguments(text: str, encoding: LabelEncoding) -> dict[str, object]:
    """'energy=3.5,field=0.8' or 'type=shower' -> {name: value}; unknown names are a ValueError."""
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in encoding.names:
            raise ValueError(f"--label {item!r}: expected name=value with a name among {', '.join(encoding.names)}")
        column = encoding.columns[encoding.names.index(name)]
        if column.kind == "continuous":
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"--label {name}={value}: {name} is continuous; give a number")
        else:
            values[name] = value
    return values


def warn_outside_range(encoding: LabelEncoding, values: dict[str, list]) -> None:
    """One line on stderr per continuous label asked for outside its training range."""
    for line in encoding.in_range_warnings(values):
        print(f"warning: {line}", file=sys.stderr)
