// Only what keeps the suite fast and quiet: no lint step in the build (no ESLint is installed).
// Nothing here is needed by persist-session.
export default { eslint: { ignoreDuringBuilds: true } };
