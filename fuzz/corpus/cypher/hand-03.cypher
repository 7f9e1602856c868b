UNWIND $l AS x WITH x WHERE x IS NOT NULL RETURN x, x + 1, toString(x), $m.a, $f * 2.5 / $n % 3
