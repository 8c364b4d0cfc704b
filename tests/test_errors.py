"""One error tree: every exception class of the package derives from posfast.PosfastError,
and every class of posfast/errors.py is exported from posfast (attribute and __all__)."""
import importlib
import inspect
import pkgutil

import pytest

import posfast
import posfast.errors


def _error_classes_of_errors_py():
    return [obj for name, obj in vars(posfast.errors).items()
            if inspect.isclass(obj) and issubclass(obj, BaseException)
            and obj.__module__ == "posfast.errors"]


def _package_modules():
    modules = [posfast]
    for info in pkgutil.walk_packages(posfast.__path__, "posfast."):
        if info.name.endswith(".__main__"):
            continue                       # running the command is not importing a module
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError as exc:           # an optional extra (escpos, psycopg) not installed
            if not (exc.name or "").startswith("posfast"):
                continue
            raise
    return modules


def test_every_errors_py_class_is_exported_from_posfast():
    classes = _error_classes_of_errors_py()
    assert posfast.errors.PosfastError in classes and len(classes) >= 10
    for cls in classes:
        assert getattr(posfast, cls.__name__, None) is cls, "posfast.%s missing" % cls.__name__
        assert cls.__name__ in posfast.__all__, "%s missing from posfast.__all__" % cls.__name__
        assert issubclass(cls, posfast.PosfastError), cls


def test_create_and_open_raise_posfast_errors_that_are_still_the_builtins(tmp_path):
    path = str(tmp_path / "j.pfj")
    with pytest.raises(posfast.JournalNotFound) as missing:
        posfast.Journal.open(path)
    assert isinstance(missing.value, FileNotFoundError)
    posfast.Journal.create(path, capacity=16).close()
    with pytest.raises(posfast.JournalExists) as exists:
        posfast.Journal.create(path, capacity=16)
    assert isinstance(exists.value, FileExistsError)
    with pytest.raises(posfast.InvalidArgument) as bad:
        posfast.Journal.create(str(tmp_path / "k.pfj"), capacity=1)
    assert isinstance(bad.value, ValueError) and "at least 2 slots" in str(bad.value)
    # the core's own checks too (Journal.create/open check first; a race reaches these)
    from posfast import _core
    with pytest.raises(posfast.JournalNotFound):
        _core.Ring.open(str(tmp_path / "gone.pfj"), False)
    with pytest.raises(posfast.JournalExists):
        _core.Ring.create(path, 16, 128, 100, b"\0" * 16, 0, 0, 0, 0)


def _foreign_exceptions():
    found = []
    for module in _package_modules():
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                    and not issubclass(obj, posfast.PosfastError)):
                found.append("%s.%s" % (module.__name__, name))
    return sorted(set(found))


def test_every_exception_class_derives_from_posfast_error():
    foreign = _foreign_exceptions()
    assert not foreign, "exception classes outside the PosfastError tree: %s" % ", ".join(foreign)
