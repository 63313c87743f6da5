"""Language detection: linguist's heuristics for shared extensions, Pygments' breadth, and the `sources`
step re-detecting from the whole file.

The HEURISTIC_PATTERNS below are copied from github-linguist lib/linguist/heuristics.yml (the
``objectivec``, ``cpp``, ``perl`` named patterns and the ``.pl`` / ``.m`` / ``.ts`` rules), so a
change of ours that drifts from linguist fails here; the samples are the kind of file linguist's
samples/ directory holds for each language.
"""

from __future__ import annotations

import re

import pytest

from domainfm.code.curate import languages
from domainfm.code.curate.languages import HEURISTICS, detect_language, known_languages
from domainfm.code.curate.sources import SourceStep
from domainfm.core.steps import StepContext

HEURISTIC_PATTERNS = {  # (extension, language) -> one of linguist's patterns for it, verbatim
    (".h", "Objective-C"): r"^\s*(@(interface|class|protocol|property|end|synchronised|selector|implementation)\b"
                           r"|#import\s+.+\.h[\">])",
    (".h", "C++"): r"^\s*template\s*<",
    (".pl", "Prolog"): r"^[^#]*:-",
    (".pl", "Perl"): r"\buse\s+(?:strict\b|v?5\b)",
    (".m", "MATLAB"): r"^\s*%",
    (".m", "Mercury"): r":- module",
    (".ts", "XML"): r"<TS\b",
}


@pytest.mark.parametrize("key,pattern", HEURISTIC_PATTERNS.items())
def test_rules_carry_linguists_patterns(key, pattern):
    ext, lang = key
    rules = [r for r in HEURISTICS[ext] if r[0] == lang]
    assert rules and pattern in rules[0][1]


OBJC_H = """//
//  AFURLSessionManager.h
//
#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

@interface AFURLSessionManager : NSObject <NSURLSessionDelegate, NSSecureCoding, NSCopying>
@property (readonly, nonatomic, strong) NSURLSession *session;
@end
"""
CPP_H = """/* Copyright 2015 The TensorFlow Authors. All Rights Reserved.
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License. You may obtain a copy of the License at
 *     http://www.apache.org/licenses/LICENSE-2.0
 */
#ifndef TENSORFLOW_CORE_FRAMEWORK_TENSOR_SHAPE_H_
#define TENSORFLOW_CORE_FRAMEWORK_TENSOR_SHAPE_H_

#include <string>

namespace tensorflow {
class TensorShape {
 public:
  int64_t dim_size(int d) const;
};
}  // namespace tensorflow
#endif
"""
C_H = """#ifndef ZLIB_H
#define ZLIB_H
#include "zconf.h"
typedef struct z_stream_s {
    const unsigned char *next_in;
    unsigned int avail_in;
} z_stream;
extern int deflate(z_stream *strm, int flush);
#endif
"""
MATLAB_M = """% KMEANS  Simple k-means clustering.
%   [IDX, C] = KMEANS(X, K) partitions the points in the N-by-P data matrix X.
function [idx, C] = kmeans(X, k)
C = X(randperm(size(X, 1), k), :);
for iter = 1:100
    [~, idx] = min(pdist2(X, C), [], 2);
end
end
"""
OBJC_M = """#import "AppDelegate.h"

@implementation AppDelegate
- (BOOL)application:(UIApplication *)application didFinishLaunchingWithOptions:(NSDictionary *)launchOptions {
    return YES;
}
@end
"""
MERCURY_M = """:- module hello.
:- interface.
:- import_module io.
:- pred main(io::di, io::uo) is det.
"""
PROLOG_PL = """:- module(lists_extra, [last_element/2]).

last_element([X], X).
last_element([_|T], X) :- last_element(T, X).
"""
PERL_PL = """#!/usr/bin/perl
use strict;
use warnings;

my %count;
while (my $line = <STDIN>) { $count{$_}++ for split /\\s+/, $line; }
print "$_ $count{$_}\\n" for sort keys %count;
"""
RAKU_PL = """use v6;
class Point { has $.x; has $.y; }
say Point.new(x => 1, y => 2).x;
"""
QT_TS = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="de_DE">
<context>
    <name>MainWindow</name>
    <message>
        <source>&amp;File</source>
        <translation>&amp;Datei</translation>
    </message>
</context>
</TS>
"""
TYPESCRIPT_TS = """import { Injectable } from '@angular/core';

export interface User { id: number; name: string; }

@Injectable({ providedIn: 'root' })
export class UserService {
  private users: User[] = [];
  add(user: User): void { this.users.push(user); }
}
"""


@pytest.mark.parametrize("path,text,lang", [
    ("AFURLSessionManager.h", OBJC_H, "Objective-C"), ("tensor_shape.h", CPP_H, "C++"), ("zlib.h", C_H, "C"),
    ("kmeans.m", MATLAB_M, "MATLAB"), ("AppDelegate.m", OBJC_M, "Objective-C"), ("hello.m", MERCURY_M, "Mercury"),
    ("lists_extra.pl", PROLOG_PL, "Prolog"), ("wc.pl", PERL_PL, "Perl"), ("point.pl", RAKU_PL, "Raku"),
    ("app_de.ts", QT_TS, "XML"), ("user.service.ts", TYPESCRIPT_TS, "TypeScript"),
])
def test_ambiguous_extensions_by_content(path, text, lang):
    assert detect_language(path, text) == lang


@pytest.mark.parametrize("path,lang", [
    ("lib/app.ex", "Elixir"), ("src/server.erl", "Erlang"), ("core.clj", "Clojure"), ("build.zig", "Zig"),
    ("default.nix", "Nix"), ("main.tf", "Terraform"), ("Token.sol", "Solidity"), ("schema.graphql", "GraphQL"),
    ("App.vue", "Vue"), ("Main.elm", "Elm"), ("alu.vhd", "VHDL"), ("tb.sv", "SystemVerilog"), ("x.nim", "Nim"),
    ("unit.pas", "Pascal"), ("plugin.vim", "Vim Script"), ("graph.dot", "Graphviz (DOT)"), ("Proof.agda", "Agda"),
])
def test_breadth_beyond_the_curated_table(path, lang):
    assert detect_language(path, "") == lang


def test_extensions_pygments_lexers_share_are_decided_from_content():
    # `.inc`: Pawn, PHP and POV-Ray all claim it; Pygments' analyse_text picks from the text
    php = "<?php\n// config.inc: database settings\n$db_host = getenv('DB_HOST');\n"
    assert detect_language("config.inc", php) == "PHP"
    assert languages.is_ambiguous("config.inc") and not languages.is_ambiguous("setup.py")


def test_known_languages_cover_linguists_breadth():
    known = known_languages()
    assert len(known) >= 450  # linguist lists ~700 languages (many data formats); StarCoder2 kept 619
    assert {"Python", "C++", "Objective-C", "MATLAB", "Prolog", "Raku", "Jupyter Notebook", "Haskell"} <= set(known)
    assert detect_language("key.pem", "") is None and detect_language("LICENSE", "MIT") is None


def test_sources_step_redetects_from_the_whole_file():
    # `read` decides from the first 200 characters: the C++ markers of this header come after its licence
    assert CPP_H.index("namespace") > 200 and detect_language("tensor_shape.h", CPP_H[:200]) == "C"
    recs = [{"path": "include/tensor_shape.h", "content": CPP_H, "language": "C", "size": len(CPP_H)},
            {"path": "kmeans.m", "content": MATLAB_M, "language": "Objective-C", "size": len(MATLAB_M)}]
    out = list(SourceStep()(recs, StepContext()))
    assert [(r["language"], r["kind"]) for r in out] == [("C++", "file"), ("MATLAB", "file")]


def test_heuristic_patterns_compile_as_python_regexes():
    for ext, rules in HEURISTICS.items():
        for _lang, pos, neg in rules:
            for p in pos + neg:
                re.compile(p, re.M)
        assert ext in languages._HEURISTIC_DEFAULT
