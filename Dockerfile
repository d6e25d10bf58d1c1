# The image infra/k8s/fleet.yaml runs (curavani/fleet): the compiled fleet, its production
# dependencies and its migrations, run as the image's `node` user (uid/gid 1000, as the
# manifest's securityContext expects). Nothing is written inside the image at run time (the
# manifest mounts the root file system read-only; the fleet writes only to its volumes).
#
#   docker build -t curavani/fleet:$(git rev-parse --short HEAD) .
#
# The Kubernetes manifest sets the command per container (`migrate`, `start --only ...`);
# without one the image runs every role.

FROM node:20-bookworm-slim AS build
WORKDIR /app
# Dependencies first (a layer that changes only with the lockfile); postinstall applies patches/.
COPY package.json package-lock.json ./
COPY patches ./patches
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY apps ./apps
COPY libs ./libs
COPY workers ./workers
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Migrations ship beside the code (libs/db/migrate.ts looks for drizzle/ at the app root).
COPY drizzle ./drizzle
USER node
EXPOSE 3000
CMD ["node", "dist/apps/cli/main.js", "start"]
