package store

import "strings"

// The functions analysts may call. The gate judges a query on the engine's
// own parse (see gate.go) and every function call in it must be named here:
// an allow-list, so a function ClickHouse adds tomorrow is refused until it
// is reviewed and listed. Each name is checked against the engine by the
// tests (it exists, it is not a table function, it reads nothing but its
// arguments), so the lists cannot rot silently.
//
// Deliberately absent: everything that reaches outside the rows of the query
// or the server's state: file, url, s3, remote*, executable*, dictGet*,
// joinGet*, hasColumnInTable, getSetting, getMacro, sleep*, throwIf,
// catboostEvaluate, evalMLMethod, naiveBayesClassifier, addressTo*,
// demangle, filesystem*, hostName, currentUser, version and the like,
// input, generateRandom and every table function.

// plainFunctions are ordinary (non-aggregate) functions, by exact name.
var plainFunctions = setOf(
	// Operators as the parser writes them, logic and comparison.
	"and", "or", "not", "xor", "equals", "notEquals", "less", "greater", "lessOrEquals", "greaterOrEquals",
	"isNotDistinctFrom", "like", "notLike", "ilike", "notILike", "match", "isNull", "isNotNull",
	"isZeroOrNull", "exists",
	"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn", "globalNotNullIn",
	"tuple", "array", "lambda", "arrayElement", "tupleElement", "untuple", "map",
	// Arithmetic and rounding.
	"plus", "minus", "multiply", "divide", "intDiv", "intDivOrZero", "modulo", "moduloOrZero", "positiveModulo",
	"negate", "abs", "sign", "gcd", "lcm", "sqrt", "cbrt", "exp", "exp2", "exp10", "log", "ln", "log2", "log10",
	"log1p", "pow", "power", "e", "pi", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "hypot", "erf",
	"isNaN", "isFinite", "isInfinite", "round", "roundBankers", "floor", "ceil", "trunc", "roundToExp2",
	"roundDuration", "roundAge", "roundDown", "widthBucket", "bitAnd", "bitOr", "bitXor", "bitNot",
	"bitShiftLeft", "bitShiftRight", "bitCount", "bitTest", "greatest", "least",
	// Conditionals and nulls.
	"if", "multiIf", "caseWithExpression", "transform", "coalesce", "ifNull", "nullIf", "assumeNotNull",
	"toNullable", "isNullable",
	// Type conversion (the OrNull/OrZero/OrDefault variants: conversionSuffixes).
	"CAST", "_CAST", "accurateCast", "accurateCastOrNull", "toString", "toFixedString", "toBool",
	"toUInt8", "toUInt16", "toUInt32", "toUInt64", "toUInt128", "toUInt256",
	"toInt8", "toInt16", "toInt32", "toInt64", "toInt128", "toInt256", "toFloat32", "toFloat64",
	"toDecimal32", "toDecimal64", "toDecimal128", "toDecimal256", "toDate", "toDate32", "toDateTime",
	"toDateTime64", "toUUID", "toIPv4", "toIPv6", "toLowCardinality", "toTypeName", "toColumnTypeName",
	"reinterpretAsString", "parseDateTime", "parseDateTimeBestEffort", "parseDateTime64BestEffort",
	"parseDateTimeBestEffortUS", "parseDateTime32BestEffort", "toDecimalString",
	// Dates and times.
	"now", "now64", "today", "yesterday", "timezone", "timeZone", "serverTimezone", "serverTimeZone",
	"toTimezone", "toTimeZone", "timeZoneOf", "toYear", "toQuarter", "toMonth", "toDayOfMonth", "toDayOfWeek",
	"toDayOfYear", "toHour", "toMinute", "toSecond", "toMillisecond", "toISOWeek", "toISOYear", "toWeek",
	"toYearWeek", "toStartOfYear", "toStartOfISOYear", "toStartOfQuarter", "toStartOfMonth", "toStartOfWeek",
	"toMonday", "toStartOfDay", "toStartOfHour", "toStartOfMinute", "toStartOfSecond", "toStartOfMillisecond",
	"toStartOfMicrosecond", "toStartOfFiveMinutes", "toStartOfTenMinutes", "toStartOfFifteenMinutes",
	"toStartOfInterval", "toLastDayOfMonth", "toLastDayOfWeek", "toTime", "toRelativeYearNum",
	"toRelativeMonthNum", "toRelativeWeekNum", "toRelativeDayNum", "toRelativeHourNum", "toRelativeMinuteNum",
	"toRelativeSecondNum", "toUnixTimestamp", "toUnixTimestamp64Milli", "toUnixTimestamp64Micro",
	"toUnixTimestamp64Nano", "fromUnixTimestamp", "fromUnixTimestamp64Milli", "fromUnixTimestamp64Micro",
	"fromUnixTimestamp64Nano", "toYYYYMM", "toYYYYMMDD", "toYYYYMMDDhhmmss", "toDaysSinceYearZero",
	"formatDateTime", "formatDateTimeInJodaSyntax", "dateDiff", "dateTrunc", "age", "dateName", "monthName", "makeDate", "makeDate32", "makeDateTime", "makeDateTime64",
	"timeSlot", "timeSlots", "addSeconds", "addMinutes", "addHours", "addDays",
	"addWeeks", "addMonths", "addQuarters", "addYears", "addMilliseconds", "addMicroseconds",
	"subtractSeconds", "subtractMinutes", "subtractHours", "subtractDays", "subtractWeeks", "subtractMonths",
	"subtractQuarters", "subtractYears", "subtractMilliseconds", "subtractMicroseconds",
	"toIntervalNanosecond", "toIntervalMicrosecond", "toIntervalMillisecond", "toIntervalSecond",
	"toIntervalMinute", "toIntervalHour", "toIntervalDay", "toIntervalWeek", "toIntervalMonth",
	"toIntervalQuarter", "toIntervalYear", "formatReadableTimeDelta",
	// Strings.
	"length", "lengthUTF8", "empty", "notEmpty", "lower", "upper", "lowerUTF8", "upperUTF8", "reverse",
	"reverseUTF8", "concat", "concatWithSeparator", "substring", "substringUTF8", "left", "right", "leftUTF8",
	"rightUTF8", "leftPad", "rightPad", "leftPadUTF8", "rightPadUTF8", "trim", "trimLeft", "trimRight",
	"trimBoth", "position", "positionCaseInsensitive", "positionUTF8", "positionCaseInsensitiveUTF8", "locate",
	"startsWith", "endsWith", "startsWithUTF8", "endsWithUTF8", "extract", "extractAll", "extractGroups",
	"extractAllGroupsHorizontal", "extractAllGroupsVertical", "regexpExtract", "replaceOne", "replaceAll",
	"replace", "replaceRegexpOne", "replaceRegexpAll", "regexpQuoteMeta", "multiMatchAny", "multiMatchAnyIndex",
	"multiSearchAny", "multiSearchFirstIndex", "splitByChar", "splitByString", "splitByRegexp",
	"splitByWhitespace", "splitByNonAlpha", "arrayStringConcat", "repeat", "space", "toValidUTF8",
	"countSubstrings", "countSubstringsCaseInsensitive", "countMatches", "hasToken", "hasTokenCaseInsensitive",
	"ngramDistance", "editDistance", "levenshteinDistance", "stringJaccardIndex", "printf", "initcap",
	"base64Encode", "base64Decode", "tryBase64Decode", "base64URLEncode", "base64URLDecode", "hex", "unhex",
	"bin", "unbin", "char", "ascii", "formatReadableSize", "formatReadableDecimalSize",
	"formatReadableQuantity", "normalizeQuery", "normalizedQueryHash",
	// URLs.
	"protocol", "domain", "domainWithoutWWW", "topLevelDomain", "firstSignificantSubdomain",
	"cutToFirstSignificantSubdomain", "port", "path", "pathFull", "queryString", "fragment", "netloc",
	"extractURLParameter", "extractURLParameters", "extractURLParameterNames", "cutQueryString",
	"cutFragment", "cutURLParameter", "decodeURLComponent", "encodeURLComponent", "URLHierarchy",
	"URLPathHierarchy",
	// JSON held in strings.
	"JSONHas", "JSONLength", "JSONType", "JSONExtract", "JSONExtractString", "JSONExtractInt",
	"JSONExtractUInt", "JSONExtractFloat", "JSONExtractBool", "JSONExtractRaw", "JSONExtractArrayRaw",
	"JSONExtractKeys", "JSONExtractKeysAndValues", "JSONExtractKeysAndValuesRaw", "JSON_VALUE", "JSON_QUERY",
	"JSON_EXISTS", "isValidJSON", "simpleJSONHas", "simpleJSONExtractString", "simpleJSONExtractInt",
	"simpleJSONExtractUInt", "simpleJSONExtractFloat", "simpleJSONExtractBool", "simpleJSONExtractRaw",
	"toJSONString",
	// IP addresses and networks.
	"IPv4NumToString", "IPv4StringToNum", "IPv4StringToNumOrNull", "IPv4StringToNumOrDefault",
	"IPv6NumToString", "IPv6StringToNum", "IPv6StringToNumOrNull", "IPv6StringToNumOrDefault",
	"IPv4NumToStringClassC", "IPv4ToIPv6", "cutIPv6", "IPv4CIDRToRange", "IPv6CIDRToRange",
	"isIPv4String", "isIPv6String", "isIPAddressInRange",
	// Arrays.
	"arrayConcat", "has", "hasAll", "hasAny", "hasSubstr", "indexOf", "countEqual", "arrayEnumerate",
	"arrayEnumerateUniq", "arrayEnumerateDense", "arrayPopBack", "arrayPopFront", "arrayPushBack",
	"arrayPushFront", "arrayResize", "arraySlice", "arraySort", "arrayReverseSort", "arrayPartialSort",
	"arrayUniq", "arrayDistinct", "arrayIntersect", "arrayReduce", "arrayReduceInRanges", "arrayReverse",
	"arrayFlatten", "arrayCompact", "arrayZip", "arrayMap", "arrayFilter", "arrayFill", "arrayReverseFill",
	"arraySplit", "arrayReverseSplit", "arrayExists", "arrayAll", "arrayFirst", "arrayLast",
	"arrayFirstOrNull", "arrayLastOrNull", "arrayFirstIndex", "arrayLastIndex", "arrayMin", "arrayMax",
	"arraySum", "arrayAvg", "arrayProduct", "arrayCount", "arrayCumSum", "arrayCumSumNonNegative",
	"arrayDifference", "arrayJoin", "arrayFold", "arrayShingles", "arrayElementOrNull", "range",
	"emptyArrayString", "emptyArrayUInt64", "arrayWithConstant", "replicate",
	// Maps.
	"mapKeys", "mapValues", "mapContains", "mapContainsKey", "mapFromArrays", "mapFilter", "mapApply",
	"mapAdd", "mapSubtract", "mapUpdate", "mapExists", "mapAll", "mapSort", "mapConcat",
	// Hashing, UUIDs and randomness.
	"cityHash64", "sipHash64", "sipHash128", "farmHash64", "farmFingerprint64", "xxHash32", "xxHash64",
	"xxh3", "murmurHash2_32", "murmurHash2_64", "murmurHash3_32", "murmurHash3_64", "murmurHash3_128",
	"halfMD5", "MD5", "SHA1", "SHA224", "SHA256", "SHA512", "javaHash", "hiveHash", "intHash32",
	"intHash64", "CRC32", "generateUUIDv4", "generateUUIDv7", "UUIDStringToNum", "UUIDNumToString",
	"UUIDv7ToDateTime", "rand", "rand64", "randCanonical", "randomPrintableASCII",
	// Aggregate states stored by the rollups, and what works on blocks.
	"finalizeAggregation", "initializeAggregation", "runningAccumulate", "runningDifference",
	"runningDifferenceStartingWithFirstValue", "neighbor", "rowNumberInAllBlocks", "rowNumberInBlock",
	"materialize", "ignore", "identity", "byteSize", "bar", "currentDatabase",
)

// conversionSuffixes are the variants of a conversion function that return
// NULL, zero or a default instead of failing (toUInt64OrNull…).
var conversionSuffixes = []string{"OrNull", "OrZero", "OrDefault"}

// aggregateFunctions may also carry combinators (aggregateCombinators).
var aggregateFunctions = setOf(
	"count", "sum", "sumWithOverflow", "sumKahan", "sumCount", "avg", "avgWeighted", "min",
	"max", "any", "anyLast", "anyHeavy", "argMin", "argMax", "argAndMin", "argAndMax", "first_value",
	"last_value", "singleValueOrNull",
	"uniq", "uniqExact", "uniqCombined", "uniqCombined64", "uniqHLL12", "uniqUpTo",
	"groupArray", "groupArrayLast", "groupArraySample", "groupArraySorted", "groupArrayInsertAt",
	"groupArrayIntersect", "groupArrayMovingSum", "groupArrayMovingAvg", "groupUniqArray", "groupConcat",
	"groupBitAnd", "groupBitOr", "groupBitXor", "groupBitmap", "groupBitmapAnd", "groupBitmapOr",
	"groupBitmapXor",
	"quantile", "quantiles", "quantileExact", "quantilesExact", "quantileExactLow", "quantileExactHigh",
	"quantileExactWeighted", "quantilesExactWeighted", "quantileTDigest", "quantilesTDigest",
	"quantileTDigestWeighted", "quantileTiming", "quantilesTiming", "quantileDeterministic",
	"quantileBFloat16", "quantileDD", "quantilesDD", "quantileGK", "quantilesGK", "median", "medianExact",
	"medianTDigest", "medianTiming", "medianDeterministic",
	"topK", "topKWeighted", "histogram", "sparkbar", "entropy", "varPop", "varSamp", "stddevPop", "stddevSamp",
	"varPopStable", "varSampStable", "stddevPopStable", "stddevSampStable", "covarPop", "covarSamp", "corr",
	"covarPopStable", "covarSampStable", "corrStable", "skewPop", "skewSamp", "kurtPop", "kurtSamp",
	"simpleLinearRegression", "rankCorr", "mannWhitneyUTest", "studentTTest", "welchTTest",
	"kolmogorovSmirnovTest", "boundingRatio", "deltaSum", "deltaSumTimestamp", "exponentialMovingAverage",
	"intervalLengthSum", "maxIntersections", "maxIntersectionsPosition", "retention", "windowFunnel",
	"sequenceMatch", "sequenceCount", "sumMapWithOverflow", "contingency",
	"cramersV", "theilsU", "largestTriangleThreeBuckets",
	// Window functions (with OVER).
	"row_number", "rank", "dense_rank", "denseRank", "percent_rank", "percentRank", "cume_dist", "ntile",
	"lag", "lead", "lagInFrame", "leadInFrame", "nth_value", "nonNegativeDerivative",
)

// aggregateCombinators are the suffixes ClickHouse applies to an aggregate
// function (sumIf, uniqMerge, avgOrNull, countDistinctIf…), longest first so
// that MergeState is not read as State.
var aggregateCombinators = []string{
	"SimpleState", "MergeState", "OrDefault", "Distinct", "Resample", "ForEach", "ArgMin", "ArgMax",
	"OrNull", "State", "Merge", "Array", "Map", "If",
}

// caseInsensitiveFunctions are the allowed functions the engine also finds
// in any letter case (COUNT(), Sum(), DATE_TRUNC…), by lower-case name; each
// maps to an allowed function (TestGateFunctionsAgainstEngine checks the
// list against system.functions).
var caseInsensitiveFunctions = setOf(
	"_cast", "abs", "acos", "age", "any_value", "array_agg", "array_to_string", "ascii", "asin", "atan",
	"atan2", "avg", "bin", "bit_and", "bit_or", "bit_xor", "byteslice", "cardinality", "cast", "ceil",
	"ceiling", "char", "char_length", "character_length", "coalesce", "concat", "concat_ws", "corr", "cos",
	"count", "countsubstrings", "covar_pop", "covar_samp", "crc32", "curdate", "current_database",
	"current_date", "current_timestamp", "database", "date_bin", "date_format", "date_trunc", "datediff",
	"datename", "day", "dayofmonth", "dayofweek", "dayofyear", "dense_rank", "exp", "first_value", "flatten",
	"floor", "format_bytes", "from_base64", "from_unixtime", "greatest", "group_concat",
	"hastokencaseinsensitive", "hex", "hour", "hypot", "if", "ifnull", "inet6_aton", "inet6_ntoa", "inet_aton",
	"inet_ntoa", "initcap", "instr", "isnull", "kolmogorovsmirnovtest", "lag", "last_day", "last_value",
	"lcase", "lead", "least", "left", "length", "ln", "locate", "log", "log10", "log2", "lower", "lpad",
	"makedate", "makedate32", "makedatetime", "makedatetime64", "max", "mid", "millisecond", "min", "minute",
	"mod", "month", "monthname", "not", "now", "now64", "nth_value", "ntile", "nullif", "octet_length",
	"percent_rank", "pi", "pmod", "position", "positive_modulo", "positivemodulo", "pow", "power", "quarter",
	"rand", "rank", "regexp_extract", "regexp_matches", "regexp_replace", "repeat", "replace", "reverse",
	"right", "round", "row_number", "rpad", "schema", "second", "sign", "sin", "space", "sqrt", "std", "stddev",
	"stddev_pop", "stddev_samp", "string_agg", "substr", "substring", "sum", "tan", "time_bucket", "timezone",
	"to_base64", "to_days", "to_unixtime", "today", "todecimalstring", "trunc", "truncate", "ucase", "unbin",
	"unhex", "unnest", "upper", "var_pop", "var_samp", "week", "width_bucket", "year", "yearweek",
)

// functionAllowed reports whether an analyst query may call name.
func functionAllowed(name string) bool {
	if plainFunctions[name] || aggregateAllowed(name) {
		return true
	}
	for _, suf := range conversionSuffixes {
		if base, ok := strings.CutSuffix(name, suf); ok && strings.HasPrefix(base, "to") && plainFunctions[base] {
			return true
		}
	}
	return caseInsensitiveFunctions[strings.ToLower(name)]
}

// aggregateAllowed reports whether name is an allowed aggregate function,
// possibly with combinators.
func aggregateAllowed(name string) bool {
	for range 8 { // no real name stacks more combinators than this
		if aggregateFunctions[name] {
			return true
		}
		stripped := false
		for _, c := range aggregateCombinators {
			if base, ok := strings.CutSuffix(name, c); ok && base != "" {
				name, stripped = base, true
				break
			}
		}
		if !stripped {
			return false
		}
	}
	return false
}

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
