// The apply and hostile-archive suites again, on the pure-JS file path (CAIRN_PURE_JS=1):
// both paths must apply every archive identically and refuse the same hostile ones.
process.env.CAIRN_PURE_JS = '1';
await import('./apply.test.js');
await import('./hostile.test.js');
