import { index, route, type RouteConfig } from "@react-router/dev/routes";

export default [
  index("routes/home.tsx"),
  route("inc", "routes/inc.ts"),
  route("late", "routes/late.tsx"),
  route("render-write", "routes/render-write.tsx"),
] satisfies RouteConfig;
